"""Moving bytes both ways between client and origin, with toxics applied.

Each direction is a reader and a writer joined by a small bounded channel:
the channel is what lets latency delay chunks without stalling the stream
(a pipeline, like a long wire), and its bound is what keeps memory bounded:
when the far side stops reading, the writer blocks, the channel fills, the
reader stops reading, and TCP flow control pushes back on the sender.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import trio

from tunnelws.streams import StreamIO

from ._streams import abort_stream, can_half_close
from ._toxics import Slicer, TokenBucket, Toxics

__all__ = ["RelayEnd", "RelayResult", "relay"]

CHUNK_BYTES = 16 * 1024
QUEUE_CHUNKS = 8  # per direction: at most 8 x 16 KiB held by the proxy
DIRECT_CHUNK_BYTES = 64 * 1024  # unshaped directions hold one chunk at most

Direction = Literal["up", "down"]
RelayEnd = Literal["closed", "idle-timeout", "lifetime", "reset", "error"]


@dataclass
class RelayResult:
    bytes_up: int = 0
    bytes_down: int = 0
    end: RelayEnd = "closed"


class _Relay:
    def __init__(
        self,
        toxics: Toxics,
        rng: random.Random,
        on_bytes: Callable[[Direction, int], None] | None,
    ) -> None:
        self.toxics = toxics
        self.rng = rng
        self.on_bytes = on_bytes
        self.result = RelayResult()
        self.ended: RelayEnd | None = None
        self.last_activity = trio.current_time()
        self.directions_done = 0
        self.scope = trio.CancelScope()

    def finish(self, end: RelayEnd) -> None:
        if self.ended is None:
            self.ended = end
        self.scope.cancel()

    def _count(self, direction: Direction, n: int) -> None:
        if direction == "up":
            self.result.bytes_up += n
        else:
            self.result.bytes_down += n
        if self.on_bytes is not None:
            self.on_bytes(direction, n)

    def _budget(self) -> int | None:
        """Bytes still allowed before a reset_after_bytes reset."""
        limit = self.toxics.reset_after_bytes
        if limit is None:
            return None
        return limit - self.result.bytes_up - self.result.bytes_down

    def _shapes(self, direction: Direction) -> bool:
        """Whether this direction delays, slices or throttles its bytes."""
        toxics = self.toxics
        latency = toxics.latency_up if direction == "up" else toxics.latency_down
        return bool(latency) or toxics.slice_min is not None or toxics.bandwidth is not None

    async def pump(self, src: trio.abc.Stream, dst: trio.abc.Stream, direction: Direction) -> None:
        if self._shapes(direction):
            send_channel, receive_channel = trio.open_memory_channel[tuple[float, bytes]](
                QUEUE_CHUNKS
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read, src, send_channel, direction)
                nursery.start_soon(self._write, receive_channel, dst, direction)
        else:
            await self._copy(src, dst, direction)
        self.directions_done += 1
        if self.directions_done == 2:
            self.finish("closed")

    async def _read(
        self,
        src: trio.abc.Stream,
        channel: trio.MemorySendChannel[tuple[float, bytes]],
        direction: Direction,
    ) -> None:
        latency = self.toxics.latency_up if direction == "up" else self.toxics.latency_down
        async with channel:
            while True:
                try:
                    data = await src.receive_some(CHUNK_BYTES)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self.finish("error")
                    return
                if not data:
                    return
                data = bytes(data)
                self.last_activity = trio.current_time()
                await channel.send((trio.current_time() + latency, data))

    async def _copy(self, src: trio.abc.Stream, dst: trio.abc.Stream, direction: Direction) -> None:
        """The unshaped path: one task reads and writes, holding one chunk
        at most."""
        if isinstance(src, trio.SocketStream) and isinstance(dst, trio.SocketStream):
            await self._copy_sockets(src, dst, direction)
            return
        while True:
            try:
                data = await src.receive_some(DIRECT_CHUNK_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.finish("error")
                return
            if not data:
                break
            self.last_activity = trio.current_time()
            await self._send_piece(dst, bytes(data), direction, None)
        await self._end_direction(dst)

    async def _copy_sockets(
        self, src: trio.SocketStream, dst: trio.SocketStream, direction: Direction
    ) -> None:
        """Both ends plain TCP: the client library's descriptor-level I/O
        (tunnelws.streams.StreamIO), which waits only when the kernel has
        nothing to read or no room to write. trio's stream calls pass through
        the scheduler on every call; here a relayed chunk costs one wake-up
        instead of three, which is most of the latency a relay adds."""
        reader, writer = StreamIO(src), StreamIO(dst)
        while True:
            try:
                data = await reader.receive_some(DIRECT_CHUNK_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.finish("error")
                await trio.lowlevel.checkpoint()
                return
            if not data:
                break
            self.last_activity = trio.current_time()
            await self._send_piece(dst, bytes(data), direction, None, write=writer.send_all)
        await self._end_direction(dst)

    async def _write(
        self,
        channel: trio.MemoryReceiveChannel[tuple[float, bytes]],
        dst: trio.abc.Stream,
        direction: Direction,
    ) -> None:
        toxics = self.toxics
        slicer = None
        if toxics.slice_min is not None and toxics.slice_max is not None:
            slicer = Slicer(toxics.slice_min, toxics.slice_max, self.rng)
        bucket = None if toxics.bandwidth is None else TokenBucket(toxics.bandwidth, 0.0)
        async with channel:
            async for deliver_at, data in channel:
                await trio.sleep_until(deliver_at)
                pieces = slicer.pieces(data) if slicer else [data]
                for piece in pieces:
                    await self._send_piece(dst, piece, direction, bucket)
                    if slicer is not None:
                        # Yield between pieces so they leave as separate segments
                        # instead of being coalesced by a reader that lags behind.
                        await trio.lowlevel.checkpoint()
        # The source reached EOF and everything queued was delivered.
        await self._end_direction(dst)

    async def _end_direction(self, dst: trio.abc.Stream) -> None:
        if can_half_close(dst):
            try:
                await dst.send_eof()  # type: ignore[attr-defined]
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.finish("error")
        else:
            # TLS streams cannot half-close: end the whole tunnel, as real proxies do.
            self.finish("closed")

    async def _send_piece(
        self,
        dst: trio.abc.Stream,
        piece: bytes,
        direction: Direction,
        bucket: TokenBucket | None,
        *,
        write: Callable[[bytes], Awaitable[None]] | None = None,
    ) -> None:
        send = write or dst.send_all
        while piece:
            part = piece if bucket is None else piece[: bucket.max_piece]
            piece = piece[len(part) :]
            if bucket is not None:
                await trio.sleep(bucket.delay_for(len(part), trio.current_time()))
            budget = self._budget()
            if budget is not None and budget < len(part):
                part = part[: max(budget, 0)]
            if self.toxics.reset_chance and self.rng.random() < self.toxics.reset_chance:
                self.finish("reset")
                await trio.lowlevel.checkpoint()
            if part:
                try:
                    await send(part)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self.finish("error")
                    await trio.lowlevel.checkpoint()
                self._count(direction, len(part))
            if budget is not None and budget <= len(part):
                self.finish("reset")
                await trio.lowlevel.checkpoint()

    async def watch_idle(self, idle: float) -> None:
        while True:
            remaining = self.last_activity + idle - trio.current_time()
            if remaining <= 0:
                self.finish("idle-timeout")
                return
            await trio.sleep(remaining)

    async def end_after(self, delay: float, end: RelayEnd) -> None:
        await trio.sleep(delay)
        self.finish(end)


async def relay(
    client: trio.abc.Stream,
    origin: trio.abc.Stream,
    toxics: Toxics,
    *,
    rng: random.Random | None = None,
    on_bytes: Callable[[Direction, int], None] | None = None,
) -> RelayResult:
    """Relay until both directions end or a toxic ends the tunnel, then close
    both streams (with a TCP reset for ``end == "reset"``).

    ``on_bytes(direction, n)`` is called as bytes are delivered (live stats).
    """
    state = _Relay(toxics, rng or random.Random(toxics.seed), on_bytes)
    try:
        with state.scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(state.pump, client, origin, "up")
                nursery.start_soon(state.pump, origin, client, "down")
                if toxics.idle_timeout is not None:
                    nursery.start_soon(state.watch_idle, toxics.idle_timeout)
                if toxics.max_lifetime is not None:
                    nursery.start_soon(state.end_after, toxics.max_lifetime, "lifetime")
                if toxics.reset_after_seconds is not None:
                    nursery.start_soon(state.end_after, toxics.reset_after_seconds, "reset")
    finally:
        state.result.end = state.ended or "closed"
        if state.result.end == "reset":
            await abort_stream(client)
            await abort_stream(origin)
        else:
            await trio.aclose_forcefully(client)
            await trio.aclose_forcefully(origin)
    return state.result
