"""Joining two byte streams both ways: what ``tunnel``, ``forward`` and
``local-proxy`` do once the route is open.

Each direction is one task that reads a chunk and writes it before reading
the next, so a joined pair holds at most one chunk per direction whatever the
peers do (memory is bounded, and TCP flow control pushes back on a fast
sender), and bytes move as soon as they arrive (nothing waits for a fuller
write). At EOF in one direction the other stream is half-closed where it can
be (TCP; TLS cannot, and that direction just stops sending). The join ends
when both directions are done, when the far side ends and ``end_with_b`` says
that is enough, when either side breaks, or when nothing moved for
``idle_timeout`` seconds.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Literal

import trio

from ._transport import PrefixedStream

__all__ = ["CHUNK_BYTES", "JoinResult", "can_half_close", "join", "send_eof"]

CHUNK_BYTES = 65536

JoinEnd = Literal["closed", "idle-timeout", "broken"]


@dataclass
class JoinResult:
    """Bytes moved each way and how the join ended. ``broken_side`` is
    ``"a"`` or ``"b"`` when ``end`` is ``"broken"``, with the reason."""

    a_to_b: int = 0
    b_to_a: int = 0
    end: JoinEnd = "closed"
    broken_side: str | None = None
    reason: str = ""


def can_half_close(stream: trio.abc.Stream) -> bool:
    if isinstance(stream, PrefixedStream):
        return can_half_close(stream.inner)
    return isinstance(stream, trio.abc.HalfCloseableStream)


async def send_eof(stream: trio.abc.Stream) -> bool:
    """Half-close ``stream`` if it can; True when it did."""
    if not can_half_close(stream):
        return False
    await stream.send_eof()  # type: ignore[attr-defined]
    return True


class _Join:
    def __init__(self, a: trio.abc.Stream, b: trio.abc.Stream, end_with_b: bool) -> None:
        self.streams = {"a": a, "b": b}
        self.end_with_b = end_with_b
        self.result = JoinResult()
        self.last_activity = trio.current_time()
        self.done = 0
        self.scope = trio.CancelScope()

    def _break(self, side: str, exc: BaseException) -> None:
        if self.result.end == "closed":
            self.result.end, self.result.broken_side = "broken", side
            self.result.reason = str(exc.__cause__ or exc) or type(exc).__name__
        self.scope.cancel()

    def _count(self, source: str, n: int) -> None:
        self.last_activity = trio.current_time()
        if source == "a":
            self.result.a_to_b += n
        else:
            self.result.b_to_a += n

    async def copy(self, source: str, destination: str) -> None:
        src, dst = self.streams[source], self.streams[destination]
        if isinstance(src, trio.SocketStream) and isinstance(dst, trio.SocketStream):
            if not await self._copy_sockets(src, dst, source, destination):
                return
        elif not await self._copy_streams(src, dst, source, destination):
            return
        try:
            await send_eof(dst)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._break(destination, exc)
            return
        self.done += 1
        if self.done == 2 or (source == "b" and self.end_with_b):
            self.scope.cancel()

    async def _copy_streams(
        self, src: trio.abc.Stream, dst: trio.abc.Stream, source: str, destination: str
    ) -> bool:
        """Copy to EOF (True) or until a side breaks (False)."""
        while True:
            try:
                data = await src.receive_some(CHUNK_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._break(source, exc)
                return False
            if not data:
                return True
            try:
                await dst.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._break(destination, exc)
                return False
            self._count(source, len(data))

    async def _copy_sockets(
        self, src: trio.SocketStream, dst: trio.SocketStream, source: str, destination: str
    ) -> bool:
        """The same for two TCP sockets, on their descriptors: a read or
        write waits for the kernel only when it would block, instead of
        passing through trio's scheduler on every call, which is most of
        what a relay costs per chunk."""
        src_fd, dst_fd = src.socket.fileno(), dst.socket.fileno()
        chunks = 0
        while True:
            try:
                data = os.read(src_fd, CHUNK_BYTES)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(src_fd)
                continue
            except OSError as exc:
                self._break(source, exc)
                return False
            if not data:
                return True
            view = memoryview(data)
            while view:
                try:
                    view = view[os.write(dst_fd, view) :]
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(dst_fd)
                except OSError as exc:
                    self._break(destination, exc)
                    return False
            self._count(source, len(data))
            chunks += 1
            if chunks % 16 == 0:
                # A firehose never makes the kernel say "wait": stay
                # cancellable and let the other connections run.
                await trio.lowlevel.checkpoint()

    async def watch_idle(self, idle_timeout: float) -> None:
        while True:
            remaining = self.last_activity + idle_timeout - trio.current_time()
            if remaining <= 0:
                self.result.end = "idle-timeout"
                self.scope.cancel()
                return
            await trio.sleep(remaining)


async def join(
    a: trio.abc.Stream,
    b: trio.abc.Stream,
    *,
    idle_timeout: float | None = None,
    end_with_b: bool = False,
) -> JoinResult:
    """Copy ``a`` to ``b`` and ``b`` to ``a`` until the join ends (see the
    module docstring), then close both streams. Never raises for a peer's
    reset or close: the result says what happened."""
    state = _Join(a, b, end_with_b)
    try:
        with state.scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(state.copy, "a", "b")
                nursery.start_soon(state.copy, "b", "a")
                if idle_timeout is not None:
                    nursery.start_soon(state.watch_idle, idle_timeout)
    finally:
        for stream in (a, b):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await trio.aclose_forcefully(stream)
    return state.result
