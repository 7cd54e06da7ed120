"""permessage-deflate, Sans-IO: the RFC 7692 section 7.2.3 examples as byte
vectors (received and sent), negotiation rules, the compression-bomb bound,
and the protocol violations that fail a compressed connection."""

from __future__ import annotations

import tracemalloc
import zlib

import pytest

from tunnelws import Deflate
from tunnelws._deflate import (
    DeflateParameters,
    NegotiationError,
    accept_offer,
    parse_response,
)
from tunnelws._frames import OPCODE_TEXT
from tunnelws._protocol import ClientProtocol, Failure

DEFLATE = DeflateParameters()


def client(max_message_size: int = 1 << 20, **agreed: object) -> ClientProtocol:
    return ClientProtocol(
        max_message_size=max_message_size, deflate=DeflateParameters(**agreed)  # type: ignore[arg-type]
    )


def unmask(frame: bytes) -> tuple[int, bytes]:
    """(first byte, payload) of one of our masked client frames."""
    length = frame[1] & 0x7F
    offset = 2 + {126: 2, 127: 8}.get(length, 0)
    key = frame[offset : offset + 4]
    payload = frame[offset + 4 :]
    return frame[0], bytes(b ^ key[i % 4] for i, b in enumerate(payload))


# -- RFC 7692 section 7.2.3, as the server would send them --------------------


def test_7_2_3_1_a_message_compressed_in_one_frame() -> None:
    frame = bytes([0xC1, 0x07, 0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00])
    assert client().receive_data(frame) == ["Hello"]


def test_7_2_3_1_a_message_compressed_in_two_fragments() -> None:
    first = bytes([0x41, 0x03, 0xF2, 0x48, 0xCD])
    second = bytes([0x80, 0x04, 0xC9, 0xC9, 0x07, 0x00])
    protocol = client()
    assert protocol.receive_data(first) == []
    assert protocol.receive_data(second) == ["Hello"]


def test_7_2_3_2_two_messages_sharing_the_window() -> None:
    first = bytes([0xC1, 0x07, 0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00])
    second = bytes([0xC1, 0x05, 0xF2, 0x00, 0x11, 0x00, 0x00])  # a back-reference
    assert client().receive_data(first + second) == ["Hello", "Hello"]


def test_7_2_3_3_a_block_with_no_compression() -> None:
    frame = bytes([0xC1, 0x0B, 0x00, 0x05, 0x00, 0xFA, 0xFF, 0x48, 0x65, 0x6C, 0x6C, 0x6F, 0x00])
    assert client().receive_data(frame) == ["Hello"]


def test_7_2_3_4_a_block_with_bfinal_set_then_a_back_reference() -> None:
    final = bytes([0xC1, 0x08, 0xF3, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00, 0x00])
    # The next message refers back to "Hello" across the ended stream.
    second = bytes([0xC1, 0x05, 0xF2, 0x00, 0x11, 0x00, 0x00])
    assert client().receive_data(final + second) == ["Hello", "Hello"]


def test_7_2_3_5_two_blocks_in_one_message() -> None:
    frame = bytes(
        [0xC1, 0x0D, 0xF2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xCA, 0xC9, 0xC9, 0x07, 0x00]
    )
    assert client().receive_data(frame) == ["Hello"]


def test_7_2_3_6_an_empty_final_fragment() -> None:
    # The first fragment is sync-flushed; the last carries an empty block.
    first = bytes([0x41, 0x0B, 0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00, 0x00, 0x00, 0xFF, 0xFF])
    last = bytes([0x80, 0x01, 0x00])
    assert client().receive_data(first + last) == ["Hello"]


def test_uncompressed_messages_still_pass_when_deflate_is_on() -> None:
    # ws (Node) sends small messages without RSV1.
    assert client().receive_data(b"\x81\x05Hello\x82\x01\x00") == ["Hello", b"\x00"]


def test_what_we_send_is_the_rfc_bytes() -> None:
    protocol = client()
    first, payload = unmask(protocol.send_message(b"Hello", OPCODE_TEXT))
    assert first == 0xC1  # FIN, RSV1, text
    assert payload == bytes([0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00])
    _, payload = unmask(protocol.send_message(b"Hello", OPCODE_TEXT))
    assert payload == bytes([0xF2, 0x00, 0x11, 0x00, 0x00])  # the window is shared


def test_client_no_context_takeover_resets_our_window() -> None:
    protocol = client(client_no_context_takeover=True)
    outputs = [unmask(protocol.send_message(b"Hello", OPCODE_TEXT))[1] for _ in range(3)]
    # Each message decodes on its own, with a fresh decompressor.
    for payload in outputs:
        assert zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff") == b"Hello"


def test_server_no_context_takeover_uses_a_fresh_window_per_message() -> None:
    protocol = client(server_no_context_takeover=True)
    frame = bytes([0xC1, 0x07, 0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00])
    assert protocol.receive_data(frame * 3) == ["Hello"] * 3
    # A back-reference into the previous message is then invalid data.
    (failure,) = protocol.receive_data(bytes([0xC1, 0x05, 0xF2, 0x00, 0x11, 0x00, 0x00]))
    assert isinstance(failure, Failure) and failure.code == 1007


def test_messages_split_at_every_byte_boundary() -> None:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    payload = compressor.compress(b"abc" * 1000) + compressor.flush(zlib.Z_SYNC_FLUSH)
    payload = payload[:-4]
    frame = bytes([0xC2, 0x7E]) + len(payload).to_bytes(2, "big") + payload
    protocol = client()
    events = []
    for i in range(len(frame)):
        events += protocol.receive_data(frame[i : i + 1])
    assert events == [b"abc" * 1000]


# -- limits --------------------------------------------------------------------


def test_a_compression_bomb_fails_with_1009_without_inflating_it() -> None:
    limit = 1 << 20
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = compressor.compress(bytes(256 << 20)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    bomb = bomb[:-4]  # 256 MiB of zeros in about 256 KiB
    frame = bytes([0xC2, 0x7F]) + len(bomb).to_bytes(8, "big") + bomb
    protocol = client(max_message_size=limit)
    tracemalloc.start()
    try:
        events = []
        for offset in range(0, len(frame), 65536):  # as the network delivers it
            events += protocol.receive_data(frame[offset : offset + 65536])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(events) == 1 and isinstance(events[0], Failure)
    assert events[0].code == 1009
    assert peak < 4 * limit  # never more than the limit (plus buffers), not 256 MiB
    assert protocol.receive_data(frame[:100]) == []  # nothing after a failure


def test_a_bomb_spread_over_fragments_is_counted_as_one_message() -> None:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = compressor.compress(bytes(600_000)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    first = bytes([0x42, 0x7E]) + len(piece).to_bytes(2, "big") + piece
    second = bytes([0x80, 0x7E]) + len(piece).to_bytes(2, "big") + piece
    (failure,) = client(max_message_size=1 << 20).receive_data(first + second)
    assert isinstance(failure, Failure) and failure.code == 1009


def test_an_uncompressed_frame_too_big_fails_at_its_header() -> None:
    protocol = ClientProtocol(max_message_size=1000)
    header = bytes([0x82, 0x7E]) + (1001).to_bytes(2, "big")
    (failure,) = protocol.receive_data(header)  # no payload byte needed
    assert isinstance(failure, Failure) and failure.code == 1009


def test_exactly_the_limit_is_allowed() -> None:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    payload = compressor.compress(b"x" * 1000) + compressor.flush(zlib.Z_SYNC_FLUSH)
    frame = bytes([0xC2, len(payload) - 4]) + payload[:-4]
    assert client(max_message_size=1000).receive_data(frame) == [b"x" * 1000]
    (failure,) = client(max_message_size=999).receive_data(frame)
    assert isinstance(failure, Failure) and failure.code == 1009


# -- violations ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (bytes([0xC1, 0x01, 0x00]), 1002),  # RSV1 without the extension
        (bytes([0xA1, 0x01, 0x00]), 1002),  # RSV2
        (bytes([0x81, 0x81, 0, 0, 0, 0, 0x41]), 1002),  # a masked server frame
        (bytes([0x83, 0x00]), 1002),  # unknown opcode
        (bytes([0x09, 0x00]), 1002),  # fragmented ping
        (bytes([0x80, 0x00]), 1002),  # continuation of nothing
        (bytes([0x81, 0x02, 0xC3, 0x28]), 1007),  # invalid UTF-8
        (bytes([0x88, 0x02, 0x03, 0xEC]), 1002),  # close code 1004
        (bytes([0x88, 0x01, 0x03]), 1002),  # 1-byte close payload
    ],
)
def test_violations_fail_with_their_code(frame: bytes, code: int) -> None:
    (failure,) = ClientProtocol(max_message_size=1000).receive_data(frame)
    assert isinstance(failure, Failure) and failure.code == code


@pytest.mark.parametrize(
    "frame",
    [
        bytes([0xC1, 0x02, 0xFF, 0xFF]),  # not DEFLATE
        bytes([0xC9, 0x00]),  # RSV1 on a ping
        bytes([0x41, 0x01, 0x00, 0xC0, 0x01, 0x00]),  # RSV1 on a continuation
    ],
)
def test_compressed_violations(frame: bytes) -> None:
    events = client().receive_data(frame)
    assert isinstance(events[-1], Failure) and events[-1].code in (1002, 1007)


# -- negotiation ---------------------------------------------------------------


def test_answers_the_client_accepts() -> None:
    assert parse_response("") == DEFLATE
    assert parse_response(
        " server_no_context_takeover; client_no_context_takeover;"
        ' server_max_window_bits=10; client_max_window_bits="12"'
    ) == DeflateParameters(True, True, 10, 12)


@pytest.mark.parametrize(
    "answer",
    [
        "server_max_window_bits=16",
        "server_max_window_bits",
        "client_max_window_bits=8",  # zlib cannot compress with a 256-byte window
        "server_no_context_takeover=1",
        "server_no_context_takeover; server_no_context_takeover",
        "x_unknown",
    ],
)
def test_answers_the_client_refuses(answer: str) -> None:
    with pytest.raises(NegotiationError):
        parse_response(answer)


def test_server_side_choices() -> None:
    assert accept_offer("client_max_window_bits") == DEFLATE
    assert accept_offer("client_max_window_bits", max_window_bits=12) == DeflateParameters(
        client_max_window_bits=12, server_max_window_bits=12
    )
    # Without client_max_window_bits in the offer, the client's window stays 15.
    assert accept_offer("", max_window_bits=12) == DeflateParameters(server_max_window_bits=12)
    assert accept_offer("server_no_context_takeover; server_max_window_bits=9") == (
        DeflateParameters(server_no_context_takeover=True, server_max_window_bits=9)
    )
    assert accept_offer("x_unknown") is None
    assert accept_offer("server_max_window_bits=8") is None  # zlib cannot honour it


def test_answer_header_value() -> None:
    assert DEFLATE.header_value() == "permessage-deflate"
    assert DeflateParameters(True, False, 12, 15).header_value() == (
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=12"
    )


def test_settings_are_checked() -> None:
    assert Deflate().level == 3
    for bad in ({"level": 10}, {"memory_level": 0}, {"max_window_bits": 8}):
        with pytest.raises(ValueError):
            Deflate(**bad)  # type: ignore[arg-type]
