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

Two plain TCP sockets (the usual pair in ``forward`` and ``local-proxy``) are
copied by two OS threads doing blocking reads and writes on duplicates of the
descriptors: a thread blocked in ``recv`` is woken by the kernel directly,
where a trio task passes through the scheduler on every wake-up, and that
wake-up is most of the latency a relay adds (measured in
benchmarks/local_proxy.py: about half). Everything else (TLS, stdio,
replayed prefixes) is copied by trio tasks.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from dataclasses import dataclass
from functools import partial
from typing import Literal

import trio

from ._transport import PrefixedStream

__all__ = ["CHUNK_BYTES", "JoinResult", "can_half_close", "join", "send_eof"]

CHUNK_BYTES = 65536

JoinEnd = Literal["closed", "idle-timeout", "broken"]
# How often a relay thread blocked on a silent socket looks at the idle clock.
THREAD_POLL_SECONDS = 0.5
# Two threads per joined socket pair; trio's default limiter (40) would queue
# the 21st tunnel behind the first twenty.
_RELAY_THREADS: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar("relay_threads")


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
    """Whether ``stream`` (under any :class:`PrefixedStream`) can send an EOF
    and keep reading."""
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
        if not await self._copy_streams(src, dst, source, destination):
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
    if isinstance(a, trio.SocketStream) and isinstance(b, trio.SocketStream):
        return await _join_sockets(a, b, idle_timeout, end_with_b)
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


class _ThreadedJoin:
    """Two sockets joined by one thread per direction (see the module docstring)."""

    def __init__(
        self, a: socket.socket, b: socket.socket, idle_timeout: float | None, end_with_b: bool
    ) -> None:
        self.sockets = {"a": a, "b": b}
        self.idle_timeout = idle_timeout
        self.end_with_b = end_with_b
        self.result = JoinResult()
        self.last_activity = time.monotonic()
        self.lock = threading.Lock()
        self.stopping = False
        self.done = 0
        self.running = 2

    def stop(self) -> None:
        """Wake both threads: a shut-down socket ends every blocked call."""
        self.stopping = True
        for sock in self.sockets.values():
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _should_stop(self) -> bool:
        if self.stopping:
            return True
        limit = self.idle_timeout
        if limit is not None and time.monotonic() - self.last_activity >= limit:
            with self.lock:
                if self.result.end == "closed":
                    self.result.end = "idle-timeout"
            self.stop()
            return True
        return False

    def _broken(self, side: str, exc: OSError) -> None:
        with self.lock:
            if self.result.end == "closed" and not self.stopping:
                self.result.end, self.result.broken_side = "broken", side
                self.result.reason = os.strerror(exc.errno) if exc.errno else str(exc)
        self.stop()

    def copy(self, source: str, destination: str) -> None:
        """Runs in a thread: copy until EOF, a break, idleness or stop()."""
        src, dst = self.sockets[source], self.sockets[destination]
        moved = 0
        try:
            while True:
                try:
                    data = src.recv(CHUNK_BYTES)
                except TimeoutError:
                    if self._should_stop():
                        return
                    continue
                except OSError as exc:
                    self._broken(source, exc)
                    return
                if not data:
                    break
                self.last_activity = time.monotonic()
                view = memoryview(data)
                while view:
                    try:
                        view = view[dst.send(view) :]
                    except TimeoutError:
                        if self._should_stop():
                            return
                    except OSError as exc:
                        self._broken(destination, exc)
                        return
                moved += len(data)
                self.last_activity = time.monotonic()
            try:
                dst.shutdown(socket.SHUT_WR)  # pass the half-close on
            except OSError as exc:
                self._broken(destination, exc)
                return
            with self.lock:
                self.done += 1
                finished = self.done == 2 or (source == "b" and self.end_with_b)
            if finished:
                self.stop()
        finally:
            with self.lock:
                if source == "a":
                    self.result.a_to_b = moved
                else:
                    self.result.b_to_a = moved
                self.running -= 1
                last = self.running == 0
            if last:  # the duplicates are closed by whoever uses them last
                for sock in self.sockets.values():
                    sock.close()


async def _join_sockets(
    a: trio.SocketStream, b: trio.SocketStream, idle_timeout: float | None, end_with_b: bool
) -> JoinResult:
    duplicates = []
    for stream in (a, b):
        duplicate = socket.socket(fileno=os.dup(stream.socket.fileno()))
        # Timeout mode: blocking calls that return every THREAD_POLL_SECONDS
        # (the descriptor stays non-blocking, as trio's socket needs it).
        duplicate.settimeout(THREAD_POLL_SECONDS)
        duplicates.append(duplicate)
    state = _ThreadedJoin(duplicates[0], duplicates[1], idle_timeout, end_with_b)
    try:
        limiter = _RELAY_THREADS.get()
    except LookupError:
        limiter = trio.CapacityLimiter(8192)
        _RELAY_THREADS.set(limiter)
    try:
        async with trio.open_nursery() as nursery:
            for source, destination in (("a", "b"), ("b", "a")):
                nursery.start_soon(
                    partial(
                        trio.to_thread.run_sync,
                        state.copy,
                        source,
                        destination,
                        abandon_on_cancel=True,  # stop() below ends the thread at once
                        limiter=limiter,
                    )
                )
    finally:
        state.stop()
        for stream in (a, b):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await trio.aclose_forcefully(stream)
    return state.result
