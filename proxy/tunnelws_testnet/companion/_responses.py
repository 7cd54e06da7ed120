"""What scanning and unreliable proxies do to forwarded responses: hold them
back until a size or their end (anti-virus proxies scan before passing on),
or reset the connection part way through the body.

Both are wrappers around the origin stream the relay reads responses from;
where to cut is a pure function of the response head.
"""

from __future__ import annotations

import random
import re
from collections.abc import Awaitable, Callable

import trio

__all__ = ["CuttingStream", "HoldingStream", "cut_offset"]

RECEIVE_BYTES = 64 * 1024
#: A response without Content-Length (chunked, close-delimited) is cut within
#: this many body bytes.
UNKNOWN_LENGTH_SPAN = 8192
MAX_HEAD_BYTES = 64 * 1024
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)[ \t]*\r\n", re.IGNORECASE)


def cut_offset(head: bytes, rng: random.Random) -> int:
    """Where to cut a response whose head (and maybe more) is ``head``:
    after the head and a random number of body bytes, never all of them."""
    head_end = head.find(b"\r\n\r\n") + 4
    match = _CONTENT_LENGTH.search(head[:head_end])
    span = int(match.group(1)) if match else UNKNOWN_LENGTH_SPAN
    return head_end + rng.randrange(max(span, 1))


class _Wrapper(trio.abc.HalfCloseableStream):
    """Forwards everything to ``inner`` (``inner`` is the name the stream
    helpers follow to reach the socket)."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()  # type: ignore[attr-defined]

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


class HoldingStream(_Wrapper):
    """Hands out nothing until ``limit`` bytes or the end arrived, then all
    of it and the rest as it comes. Memory: ``limit`` bytes."""

    def __init__(self, inner: trio.abc.Stream, limit: int, on_hold: Callable[[], None]) -> None:
        super().__init__(inner)
        self.limit = limit
        self._held = bytearray()
        self._released = False
        self._eof = False
        self._on_hold = on_hold

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if not self._released:
            self._on_hold()
            while len(self._held) < self.limit:
                data = await self.inner.receive_some(min(RECEIVE_BYTES, self.limit))
                if not data:
                    self._eof = True
                    break
                self._held += data
            self._released = True
        if self._held:
            size = len(self._held) if max_bytes is None else max_bytes
            out = bytes(self._held[:size])
            del self._held[:size]
            return out
        if self._eof:
            return b""
        return await self.inner.receive_some(max_bytes)


class CuttingStream(_Wrapper):
    """Hands out the response up to :func:`cut_offset`, then calls
    ``on_cut`` (which resets the client) and fails."""

    def __init__(
        self,
        inner: trio.abc.Stream,
        rng: random.Random,
        on_cut: Callable[[], Awaitable[None]],
    ) -> None:
        super().__init__(inner)
        self._rng = rng
        self._on_cut = on_cut
        self._head = bytearray()
        self._cut_at: int | None = None
        self._given = 0
        self._pending = b""

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._cut_at is not None and self._given >= self._cut_at:
            await self._on_cut()
            raise trio.BrokenResourceError("response reset mid-body (reset_responses)")
        data = self._pending or bytes(await self.inner.receive_some(max_bytes))
        self._pending = b""
        if self._cut_at is None:
            self._head += data
            if b"\r\n\r\n" in self._head or len(self._head) > MAX_HEAD_BYTES or not data:
                self._cut_at = cut_offset(bytes(self._head), self._rng)
        if self._cut_at is not None and self._given + len(data) > self._cut_at:
            keep = self._cut_at - self._given
            data = data[:keep]
        self._given += len(data)
        if not data and self._cut_at is not None and self._given >= self._cut_at:
            await self._on_cut()
            raise trio.BrokenResourceError("response reset mid-body (reset_responses)")
        return data
