"""Outgoing data frames decode, through wsproto's own server-side parser, to
exactly the message sent, at every length-encoding boundary."""

from __future__ import annotations

import os

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, TextMessage

from tunnelws._frames import OPCODE_BINARY, OPCODE_TEXT, encode_frame


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 70001])
def test_binary_frames_round_trip(length: int) -> None:
    payload = os.urandom(length)
    server = Connection(ConnectionType.SERVER)
    server.receive_data(encode_frame(OPCODE_BINARY, payload))
    events = list(server.events())
    assert all(isinstance(e, BytesMessage) for e in events)
    assert b"".join(e.data for e in events) == payload  # type: ignore[attr-defined]
    assert events[-1].message_finished  # type: ignore[attr-defined]


def test_text_frame_and_masking_key_is_fresh() -> None:
    text = "zürich ✓"
    first = encode_frame(OPCODE_TEXT, text.encode())
    second = encode_frame(OPCODE_TEXT, text.encode())
    assert first[2:6] != second[2:6]  # a new random key per frame
    assert first[1] & 0x80  # mask bit set: clients must mask
    server = Connection(ConnectionType.SERVER)
    server.receive_data(first)
    (event,) = list(server.events())
    assert isinstance(event, TextMessage) and event.data == text
