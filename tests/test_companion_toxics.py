"""Faults on the relay: latency, bandwidth, slicing, resets, idle timeout,
lifetime; and robustness: backpressure and no leaked file descriptors."""

from __future__ import annotations

import os
from functools import partial

import pytest
import trio
from websockets.trio.client import connect

from companion_support import (
    raw_connect,
    start_origin,
    start_proxy,
    start_tcp_echo,
    wait_until_idle,
)
from tunnelws_testnet.companion import RunningProxy, Toxics


async def open_echo_tunnel(proxy: RunningProxy, port: int) -> trio.SocketStream:
    reply = await raw_connect(proxy, f"127.0.0.1:{port}")
    assert reply.status == 200, reply.head
    return reply.stream


async def round_trip(stream: trio.abc.Stream, payload: bytes) -> tuple[bytes, int]:
    """Send ``payload``, read its echo; returns the echo and the number of reads."""
    await stream.send_all(payload)
    data, reads = b"", 0
    with trio.fail_after(10):
        while len(data) < len(payload):
            chunk = await stream.receive_some(65536)
            assert chunk, "tunnel closed early"
            data += chunk
            reads += 1
    return data, reads


async def test_latency_each_way(nursery: trio.Nursery) -> None:
    port = await start_tcp_echo(nursery)
    proxy = await start_proxy(nursery, toxics=Toxics(latency_up=0.1, latency_down=0.15))
    stream = await open_echo_tunnel(proxy, port)
    started = trio.current_time()
    assert (await round_trip(stream, b"ping"))[0] == b"ping"
    elapsed = trio.current_time() - started
    assert 0.25 <= elapsed < 0.8, elapsed
    # Latency is a pipeline, not stop-and-wait: 5 quick writes still take ~one RTT.
    started = trio.current_time()
    for _ in range(5):
        await stream.send_all(b"x")
        await trio.sleep(0.01)
    data = b""
    with trio.fail_after(2):
        while len(data) < 5:
            data += await stream.receive_some(100)
    assert trio.current_time() - started < 0.6
    await stream.aclose()


async def test_bandwidth_limit(nursery: trio.Nursery) -> None:
    port = await start_tcp_echo(nursery)
    proxy = await start_proxy(nursery, toxics=Toxics(bandwidth=200_000))
    stream = await open_echo_tunnel(proxy, port)
    payload = os.urandom(100_000)
    started = trio.current_time()
    async with trio.open_nursery() as inner:
        inner.start_soon(stream.send_all, payload)
        echoed, _ = await round_trip_receive_only(stream, len(payload))
    elapsed = trio.current_time() - started
    assert echoed == payload
    assert 0.4 <= elapsed < 3.0, elapsed  # 100 kB at 200 kB/s is 0.5 s (directions overlap)
    await stream.aclose()


async def round_trip_receive_only(stream: trio.abc.Stream, size: int) -> tuple[bytes, int]:
    data, reads = b"", 0
    with trio.fail_after(10):
        while len(data) < size:
            chunk = await stream.receive_some(65536)
            assert chunk
            data += chunk
            reads += 1
    return data, reads


async def test_slicing_cuts_writes_into_small_pieces(nursery: trio.Nursery) -> None:
    port = await start_tcp_echo(nursery)
    plain = await start_proxy(nursery)
    sliced = await start_proxy(nursery, toxics=Toxics(slice_min=1, slice_max=4, seed=3))
    payload = os.urandom(2000)
    stream = await open_echo_tunnel(plain, port)
    echoed, plain_reads = await round_trip(stream, payload)
    await stream.aclose()
    stream = await open_echo_tunnel(sliced, port)
    echoed_sliced, sliced_reads = await round_trip(stream, payload)
    await stream.aclose()
    assert echoed == echoed_sliced == payload
    assert plain_reads <= 3 and sliced_reads > 100, (plain_reads, sliced_reads)


async def test_slow_link_with_websockets(nursery: trio.Nursery) -> None:
    origin = await start_origin(nursery)
    toxics = Toxics(latency_up=0.05, latency_down=0.05, slice_min=1, slice_max=16, seed=9)
    proxy = await start_proxy(nursery, toxics=toxics)
    with trio.fail_after(15):
        async with connect(origin.ws_url, proxy=proxy.url, open_timeout=10) as websocket:
            message = "x" * 3000
            await websocket.send(message)
            assert await websocket.recv() == message


async def expect_reset(stream: trio.abc.Stream, limit: float) -> bytes:
    """Read until the connection breaks; a clean EOF fails the test."""
    data = b""
    with trio.fail_after(limit), pytest.raises(trio.BrokenResourceError):
        while True:
            chunk = await stream.receive_some(65536)
            assert chunk, "clean EOF where a reset was expected"
            data += chunk
    return data


async def test_reset_after_bytes(nursery: trio.Nursery) -> None:
    port = await start_tcp_echo(nursery)
    proxy = await start_proxy(nursery, toxics=Toxics(reset_after_bytes=30))
    stream = await open_echo_tunnel(proxy, port)
    assert (await round_trip(stream, b"a" * 10))[0] == b"a" * 10  # 20 bytes used
    await stream.send_all(b"b" * 20)
    echoed = await expect_reset(stream, 3)
    assert len(echoed) < 20  # only 10 of the 40 bytes were left in the budget
    await wait_until_idle(proxy)
    assert proxy.stats.resets == 1
    assert proxy.stats.bytes_up + proxy.stats.bytes_down == 30


async def test_reset_after_seconds_and_by_chance(nursery: trio.Nursery) -> None:
    port = await start_tcp_echo(nursery)
    timed = await start_proxy(nursery, toxics=Toxics(reset_after_seconds=0.3))
    stream = await open_echo_tunnel(timed, port)
    started = trio.current_time()
    await expect_reset(stream, 3)
    assert 0.25 <= trio.current_time() - started < 1.5
    dice = await start_proxy(nursery, toxics=Toxics(reset_chance=1.0, seed=1))
    stream = await open_echo_tunnel(dice, port)
    await stream.send_all(b"hello")
    assert await expect_reset(stream, 3) == b""


async def test_idle_timeout_spares_busy_tunnels(nursery: trio.Nursery) -> None:
    port = await start_tcp_echo(nursery)
    proxy = await start_proxy(nursery, toxics=Toxics(idle_timeout=0.4))
    stream = await open_echo_tunnel(proxy, port)
    for _ in range(6):  # 0.9 s of traffic every 0.15 s: longer than the timeout
        assert (await round_trip(stream, b"k"))[0] == b"k"
        await trio.sleep(0.15)
    started = trio.current_time()
    with trio.fail_after(3):
        assert await stream.receive_some(10) == b""  # closed with a FIN, not a reset
    assert 0.2 <= trio.current_time() - started < 1.0
    await wait_until_idle(proxy)
    assert proxy.stats.idle_timeouts == 1


async def test_max_lifetime_closes_busy_tunnels(nursery: trio.Nursery) -> None:
    port = await start_tcp_echo(nursery)
    proxy = await start_proxy(nursery, toxics=Toxics(max_lifetime=0.5))
    stream = await open_echo_tunnel(proxy, port)
    started = trio.current_time()
    with trio.fail_after(3):
        while True:
            await stream.send_all(b"z")
            chunk = await stream.receive_some(10)
            if not chunk:
                break
            await trio.sleep(0.05)
    assert 0.4 <= trio.current_time() - started < 1.5


async def test_backpressure_bounds_what_the_proxy_buffers(nursery: trio.Nursery) -> None:
    stalled: list[trio.SocketStream] = []

    async def never_reads(stream: trio.SocketStream) -> None:
        stalled.append(stream)
        await trio.sleep_forever()

    listeners = await nursery.start(partial(trio.serve_tcp, never_reads, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    proxy = await start_proxy(nursery)
    stream = await open_echo_tunnel(proxy, port)
    sent = 0
    block = bytes(256 * 1024)
    with trio.move_on_after(1.5):
        while True:
            await stream.send_all(block)
            sent += len(block)
    # Kernel socket buffers on loopback hold a few MiB; an unbounded proxy
    # would have swallowed hundreds of MiB in that time.
    assert sent < 48 * 1024 * 1024, sent
    await stream.aclose()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_two_thousand_tunnels_leak_no_descriptors(nursery: trio.Nursery) -> None:
    port = await start_tcp_echo(nursery)
    proxy = await start_proxy(nursery)
    before = open_fds()

    async def one_tunnel() -> None:
        stream = await open_echo_tunnel(proxy, port)
        assert (await round_trip(stream, b"x"))[0] == b"x"
        await stream.aclose()

    async def worker(count: int) -> None:
        for _ in range(count):
            await one_tunnel()

    with trio.fail_after(60):
        async with trio.open_nursery() as workers:
            for _ in range(20):
                workers.start_soon(worker, 100)
    await wait_until_idle(proxy)
    assert proxy.stats.tunnels_total == 2000
    for _ in range(100):  # the echo server closes its side a moment later
        if open_fds() <= before:
            break
        await trio.sleep(0.02)
    assert open_fds() <= before
