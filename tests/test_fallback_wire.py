"""The fallback protocol's wire format and delivery windows (Sans-IO)."""

from __future__ import annotations

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
    ReceiveWindow,
    SendWindow,
    SessionLimits,
    decode_down_event,
    decode_upstream,
    encode_ack_event,
    encode_end_event,
    encode_heartbeat,
    encode_message_event,
    encode_upstream,
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
