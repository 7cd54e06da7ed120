"""Small stream helpers: replaying buffered bytes, finding the socket, resets."""

from __future__ import annotations

import contextlib
import socket
import struct

import trio

__all__ = ["PrefixedStream", "abort_stream", "send_reply", "socket_stream_of"]


class PrefixedStream(trio.abc.Stream):
    """A stream that first yields ``prefix`` (bytes already read past a
    request head), then reads from ``inner``."""

    def __init__(self, inner: trio.abc.Stream, prefix: bytes) -> None:
        self.inner = inner
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            size = len(self._prefix) if max_bytes is None else max_bytes
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            await trio.lowlevel.checkpoint()
            return data
        return bytes(await self.inner.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def send_eof(self) -> None:
        if isinstance(self.inner, trio.abc.HalfCloseableStream):
            await self.inner.send_eof()
        else:
            raise trio.ClosedResourceError("inner stream cannot half-close")


def prefixed(inner: trio.abc.Stream, prefix: bytes) -> trio.abc.Stream:
    """``inner`` with ``prefix`` in front; ``inner`` itself when there is
    none, so the usual tunnel pays for no extra layer on every read."""
    return PrefixedStream(inner, prefix) if prefix else inner


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


def can_half_close(stream: trio.abc.Stream) -> bool:
    if isinstance(stream, PrefixedStream):
        return can_half_close(stream.inner)
    return isinstance(stream, trio.abc.HalfCloseableStream)


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
