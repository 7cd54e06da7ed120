"""A connection's byte I/O with as few scheduler passes as trio allows.

On a plain TCP stream (``ws://`` and HTTP CONNECT tunnels, the usual case)
reads and writes go straight to the socket's descriptor: a read waits until
the socket is readable and then reads once; a write goes out at once and
waits only when the kernel's buffer is full. trio's ``SocketStream`` tries a
read first (one failed ``recv`` per message when data is not there yet) and
yields after every successful call: of the four scheduler passes of a small
round trip, that is three. Other streams (TLS, SOCKS, prefixed) go through
the stream's own methods.

Cancellation and closing behave as with ``SocketStream``: a wait is a
checkpoint, closing the stream wakes a waiting read or write with
``trio.ClosedResourceError``, and socket errors become
``trio.BrokenResourceError``.
"""

from __future__ import annotations

import os

import trio

__all__ = ["StreamIO"]

# After this many reads or writes in a row that did not have to wait, yield
# once, so a connection that is never short of data cannot starve the others.
_FAIRNESS = 16


class StreamIO:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._socket = stream.socket if type(stream) is trio.SocketStream else None
        # The last read filled its buffer: more is probably waiting already.
        self._more = False
        self._unyielded = 0

    async def receive_some(self, max_bytes: int) -> bytes | bytearray:
        sock = self._socket
        if sock is None:
            return await self.stream.receive_some(max_bytes)
        if self._more and self._unyielded < _FAIRNESS:
            data = self._read(sock, max_bytes)
            if data is not None:
                self._unyielded += 1
                return data
        self._unyielded = 0
        while True:
            await trio.lowlevel.wait_readable(sock)
            data = self._read(sock, max_bytes)
            if data is not None:
                return data

    def _read(self, sock: trio.socket.SocketType, max_bytes: int) -> bytes | None:
        fd = sock.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("the connection was closed")
        try:
            data = os.read(fd, max_bytes)
        except BlockingIOError:
            self._more = False
            return None
        except OSError as exc:
            raise trio.BrokenResourceError(exc) from exc
        self._more = len(data) == max_bytes
        return data

    async def send_all(self, data: bytes) -> None:
        sock = self._socket
        if sock is None:
            await self.stream.send_all(data)
            return
        await trio.lowlevel.checkpoint_if_cancelled()
        sent = self._write(sock, data)
        if sent == len(data):
            self._unyielded += 1
            if self._unyielded >= _FAIRNESS:
                self._unyielded = 0
                await trio.lowlevel.cancel_shielded_checkpoint()
            return
        view = memoryview(data)
        while sent < len(data):
            await trio.lowlevel.wait_writable(sock)
            sent += self._write(sock, view[sent:])

    def _write(self, sock: trio.socket.SocketType, data: bytes | memoryview) -> int:
        fd = sock.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("the connection was closed")
        try:
            return os.write(fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise trio.BrokenResourceError(exc) from exc
