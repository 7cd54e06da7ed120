"""The fallback protocol's wire format and delivery windows (Sans-IO)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnelws._fallback_wire import (
    Ack,
    End,
    FallbackMessage,
    FallbackPath,
    FallbackProtocolError,
    Heartbeat,
    OpenRequest,
    ReceiveWindow,
    SendWindow,
    SessionLimits,
    UpstreamBatch,
    decode_down_event,
    decode_error,
    decode_open_answer,
    decode_up_answer,
    decode_upstream,
    encode_ack_event,
    encode_end_event,
    encode_heartbeat,
    encode_message_event,
    encode_message_json,
    encode_open_request,
    encode_upstream,
    encode_upstream_within,
    fallback_path,
    parse_fallback_path,
)
from tunnelws._sse import EventStreamParser

LIMITS = SessionLimits()


def test_paths_hang_off_the_websocket_path() -> None:
    assert fallback_path("/echo?room=5", "open") == "/echo/_tunnelws/1/open?room=5"
    assert fallback_path("/", "open") == "/_tunnelws/1/open"
    assert fallback_path("/chat/", "down", "abc") == "/chat/_tunnelws/1/abc/down"
    assert parse_fallback_path("/echo/_tunnelws/1/open?room=5") == FallbackPath(
        "/echo?room=5", "open"
    )
    assert parse_fallback_path("/_tunnelws/1/s-1/up") == FallbackPath("/", "up", "s-1")
    assert parse_fallback_path("/echo") is None
    with pytest.raises(FallbackProtocolError, match="version"):
        parse_fallback_path("/echo/_tunnelws/2/open")
    with pytest.raises(FallbackProtocolError):
        parse_fallback_path("/echo/_tunnelws/1/bad%20id/down")


def _round_trip(*frames: bytes) -> list[object]:
    parser = EventStreamParser()
    events = [e for frame in frames for e in parser.feed(frame)]
    return [decode_down_event(e, LIMITS.max_message_size) for e in events]


@given(st.text(), st.binary())
def test_messages_survive_sse_framing(text: str, data: bytes) -> None:
    sent = [
        FallbackMessage(1, "text", text),
        FallbackMessage(2, "binary", data),
        FallbackMessage(3, "close", "bye", 1000),
    ]
    assert _round_trip(*map(encode_message_event, sent)) == sent


def test_control_events() -> None:
    frames = (
        encode_heartbeat(),
        encode_ack_event(7),
        encode_end_event(),
        b"event: new\ndata: x\n\n",
    )
    assert _round_trip(*frames) == [Heartbeat(), Ack(7), End(), None]


def test_upstream_batches_round_trip_and_reject_garbage() -> None:
    messages = [FallbackMessage(1, "text", "a\r\nb"), FallbackMessage(2, "binary", b"\x00\xff")]
    batch = decode_upstream(encode_upstream(5, messages), LIMITS)
    assert batch.ack == 5 and list(batch.messages) == messages
    for body in (
        b"not json",
        b"[]",
        b'{"ack": -1}',
        b'{"messages": [{"seq": 0}]}',
        b'{"messages": [{"seq": 1, "type": "binary", "data": "%%"}]}',
    ):
        with pytest.raises(FallbackProtocolError):
            decode_upstream(body, LIMITS)
    with pytest.raises(FallbackProtocolError, match="exceeds"):
        decode_upstream(b"x" * (LIMITS.max_batch_bytes + 1), LIMITS)


def test_limits_from_json_checks_types_and_ignores_unknown_names() -> None:
    limits = SessionLimits.from_json({"heartbeat": 2, "window": 8, "future": "x"})
    assert limits.heartbeat == 2.0 and limits.window == 8
    with pytest.raises(FallbackProtocolError):
        SessionLimits.from_json({"window": -1})


def test_windows_give_exactly_once_in_order() -> None:
    sender, receiver = SendWindow(window=3), ReceiveWindow()
    for text in "abc":
        sender.push("text", text)
    assert sender.full
    delivered = [m.data for m in sender.unacked() if receiver.accept(m)]
    # A lost response: everything is sent again; nothing is delivered twice.
    delivered += [m.data for m in sender.unacked() if receiver.accept(m)]
    assert delivered == ["a", "b", "c"]
    assert sender.ack(receiver.received) == 3 and len(sender) == 0 and not sender.full
    gap = FallbackMessage(5, "text", "e")
    with pytest.raises(FallbackProtocolError, match="lost"):
        receiver.accept(gap)
    with pytest.raises(FallbackProtocolError, match="never sent"):
        sender.ack(4)


# -- the client's side: batches within a size, answers --------------------------------


@given(st.lists(st.text() | st.binary(), max_size=20), st.integers(50, 2000))
def test_batches_within_a_size_decode_as_the_whole(items: list[str | bytes], limit: int) -> None:
    messages = [
        FallbackMessage(seq, "text" if isinstance(item, str) else "binary", item)
        for seq, item in enumerate(items, start=1)
    ]
    encoded = []
    for message in messages:
        try:
            encoded.append(encode_message_json(message))
        except UnicodeEncodeError:  # lone surrogates: not sendable, as for a WebSocket
            return
    body, count = encode_upstream_within(7, encoded, limit)
    # As many as fit, but one at least, so that a sender always progresses.
    assert len(body) <= limit or count == 1
    assert count >= 1 or not messages
    if count < len(messages):
        assert len(body) + len(encoded[count]) + 1 > limit
    batch = decode_upstream(body, SessionLimits(max_batch_bytes=1 << 30))
    assert batch == UpstreamBatch(7, tuple(messages[:count]))


def test_non_ascii_text_goes_as_utf8() -> None:
    assert encode_message_json(FallbackMessage(1, "text", "é")) == (
        '{"seq":1,"type":"text","data":"é"}'.encode()
    )


def test_open_answers_the_client_cannot_trust_are_refused() -> None:
    good = {"version": 1, "session": "s-1", "subprotocol": None, "limits": {"window": 8}}
    answer = decode_open_answer(json.dumps({**good, "limits": {"window": 8, "new": 1}}).encode())
    assert (answer.session, answer.limits.window) == ("s-1", 8)
    for bad in (
        b"[]",
        b"{not json",
        json.dumps({**good, "version": 2}).encode(),
        json.dumps({**good, "version": True}).encode(),
        json.dumps({**good, "session": "a/b"}).encode(),
        json.dumps({**good, "subprotocol": 5}).encode(),
        json.dumps({**good, "limits": {"window": 0}}).encode(),
        json.dumps({**good, "limits": []}).encode(),
    ):
        with pytest.raises(FallbackProtocolError):
            decode_open_answer(bad)
    assert decode_up_answer(b'{"ack": 3}') == 3
    for bad_ack in (b'{"ack": -1}', b'{"ack": true}', b"{}", b"nope"):
        with pytest.raises(FallbackProtocolError):
            decode_up_answer(bad_ack)
    assert decode_error(b'{"error": "unknown session"}') == ("unknown session", None)
    assert decode_error(b'{"error": "no", "status": 403}') == ("no", 403)
    assert decode_error(b"<html>") == (None, None)
    assert encode_open_request(OpenRequest(("a",), (("X", "1"),))) == (
        b'{"version":1,"subprotocols":["a"],"headers":[["X","1"]]}'
    )
