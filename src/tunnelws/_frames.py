"""Outgoing WebSocket data frames (RFC 6455 section 5.2), masked in C.

Clients must mask every frame with a fresh random key. wsproto masks in pure
Python, which at 64 KiB costs more than the rest of a round trip; wsaccel
does the same XOR in C. Control frames and all parsing stay with wsproto; this
module only writes complete (FIN) text and binary frames, as tunnelws never
fragments what it sends and negotiates no extensions.
"""

from __future__ import annotations

import os
import struct

try:
    from wsaccel.xormask import XorMaskerSimple
except ImportError:  # e.g. an interpreter wsaccel has no build for
    from wsproto.frame_protocol import XorMaskerSimple

__all__ = ["OPCODE_BINARY", "OPCODE_TEXT", "data_frame"]

OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2
_FIN = 0x80
_MASKED = 0x80


def data_frame(opcode: int, payload: bytes) -> bytes:
    """One complete, masked client frame carrying ``payload``."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", _FIN | opcode, _MASKED | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", _FIN | opcode, _MASKED | 126, length)
    else:
        header = struct.pack("!BBQ", _FIN | opcode, _MASKED | 127, length)
    key = os.urandom(4)
    masked = XorMaskerSimple(key).process(payload) if payload else b""
    return b"".join((header, key, masked))
