"""WebSocket frames on the wire (RFC 6455 section 5.2): client frames out,
server frame headers in.

Clients must mask every frame with a fresh random key. The XOR runs in C
(python-websockets' vectorised ``apply_mask``, about 1 µs per 64 KiB, where
wsaccel's byte loop takes about 35 µs and wsproto's pure-Python masker about 70;
benchmarks/micro.py measures all three).
tunnelws never fragments what it sends.
"""

from __future__ import annotations

import os
import struct
from typing import NamedTuple

try:
    from websockets.speedups import apply_mask
except ImportError:  # an interpreter the C speedups were not built for
    from websockets.utils import apply_mask

__all__ = [
    "OPCODE_BINARY",
    "OPCODE_CLOSE",
    "OPCODE_CONTINUATION",
    "OPCODE_PING",
    "OPCODE_PONG",
    "OPCODE_TEXT",
    "FrameHeader",
    "HeaderError",
    "encode_frame",
    "parse_header",
]

OPCODE_CONTINUATION = 0x0
OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2
OPCODE_CLOSE = 0x8
OPCODE_PING = 0x9
OPCODE_PONG = 0xA
_DATA_OPCODES = frozenset({OPCODE_CONTINUATION, OPCODE_TEXT, OPCODE_BINARY})
_CONTROL_OPCODES = frozenset({OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG})
_FIN = 0x80
_RSV1 = 0x40
_RSV23 = 0x30
_MASKED = 0x80
_LENGTH_16 = struct.Struct("!H")
_LENGTH_64 = struct.Struct("!Q")
# Masking keys come from the OS's CSPRNG 1,024 at a time: one getrandom
# call per frame was a tenth of a small round trip's system calls.
_KEYS_AT_ONCE = 1024
_keys = b""
_next_key = 0


def _mask_key() -> bytes:
    global _keys, _next_key
    start = _next_key
    if start >= len(_keys):
        _keys = os.urandom(4 * _KEYS_AT_ONCE)
        start = 0
    _next_key = start + 4
    return _keys[start : start + 4]


def encode_frame(opcode: int, payload: bytes, *, rsv1: bool = False) -> bytes:
    """One complete (FIN), masked client frame carrying ``payload``."""
    length = len(payload)
    first = _FIN | opcode | (_RSV1 if rsv1 else 0)
    if length < 126:
        header = bytes((first, _MASKED | length))
    elif length < 1 << 16:
        header = bytes((first, _MASKED | 126)) + _LENGTH_16.pack(length)
    else:
        header = bytes((first, _MASKED | 127)) + _LENGTH_64.pack(length)
    key = _mask_key()
    return b"".join((header, key, apply_mask(payload, key))) if payload else header + key


class FrameHeader(NamedTuple):
    fin: bool
    rsv1: bool
    opcode: int
    length: int
    size: int  # bytes the header itself takes


class HeaderError(Exception):
    """A server frame header that breaks RFC 6455 (close with 1002)."""


def parse_header(buffer: bytes, pos: int) -> FrameHeader | None:
    """The header of a server-to-client frame at ``buffer[pos:]``, or None
    when it is not complete yet. Extensions decide what RSV1 means."""
    available = len(buffer) - pos
    if available < 2:
        return None
    first = buffer[pos]
    second = buffer[pos + 1]
    opcode = first & 0x0F
    if first & _RSV23:
        raise HeaderError("reserved bits RSV2/RSV3 set")
    if second & _MASKED:
        raise HeaderError("the server masked a frame")
    length = second & 0x7F
    size = 2
    if length == 126:
        if available < 4:
            return None
        (length,) = _LENGTH_16.unpack_from(buffer, pos + 2)
        size = 4
    elif length == 127:
        if available < 10:
            return None
        (length,) = _LENGTH_64.unpack_from(buffer, pos + 2)
        if length >> 63:
            raise HeaderError("64-bit payload length with the high bit set")
        size = 10
    fin = bool(first & _FIN)
    if opcode in _CONTROL_OPCODES:
        if not fin:
            raise HeaderError("fragmented control frame")
        if length > 125:
            raise HeaderError("control frame longer than 125 bytes")
    elif opcode not in _DATA_OPCODES:
        raise HeaderError(f"unknown opcode {opcode:#x}")
    return FrameHeader(fin, bool(first & _RSV1), opcode, length, size)
