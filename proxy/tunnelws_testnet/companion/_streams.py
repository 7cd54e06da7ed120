"""Small stream helpers: finding the socket, resets, replies. Replaying bytes
read past a request head (PrefixedStream) and whether a stream can be
half-closed are the client's public ``tunnelws.streams``, shared."""

from __future__ import annotations

import contextlib
import socket
import struct

import trio

from tunnelws.streams import PrefixedStream, can_half_close, prefixed

__all__ = [
    "PrefixedStream",
    "abort_stream",
    "can_half_close",
    "prefixed",
    "send_reply",
    "socket_stream_of",
]


def socket_stream_of(stream: trio.abc.Stream) -> trio.SocketStream | None:
    """The TCP stream under any TLS or prefix wrappers."""
    seen = 0
    current: object = stream
    while seen < 8:
        if isinstance(current, trio.SocketStream):
            return current
        current = getattr(current, "transport_stream", None) or getattr(current, "inner", None)
        seen += 1
    return None


async def abort_stream(stream: trio.abc.Stream) -> None:
    """Close so the peer sees a TCP RST (SO_LINGER 0), not a FIN."""
    raw = socket_stream_of(stream)
    if raw is not None:
        with contextlib.suppress(OSError, trio.ClosedResourceError):
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # Close the socket itself: a TLS wrapper would try to send close_notify.
        await trio.aclose_forcefully(raw)
    await trio.aclose_forcefully(stream)


async def send_reply(stream: trio.abc.Stream, data: bytes, *, dribble: bool = False) -> None:
    """Write ``data``; with ``dribble`` one byte per write, paced so each
    byte leaves as its own segment."""
    if not dribble:
        await stream.send_all(data)
        return
    for index in range(len(data)):
        await stream.send_all(data[index : index + 1])
        await trio.sleep(0.001)
