"""Tunnel relay speed: the companion proxy vs pproxy vs squid, in one run.

For each proxy: throughput through CONNECT tunnels (64 KiB writes, one tunnel
and 100 concurrent tunnels, MB/s) and the latency a proxy adds to a small
round trip (median through the tunnel minus median direct). Every proxy runs
in its own process with its defaults (the companion proxy's `open` profile);
the client and the sink/echo origin are the same for all.

    .venv/bin/python benchmarks/relay.py [--seconds 10] [--rounds 5]

The proxies are started by tunnelws_testnet.peers (the same definitions the
tests and the harness use); squid comes from Debian (skipped with a note when
it is not installed).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import trio

import tunnelws
from _processes import spawn
from tunnelws_testnet.peers import CompanionProxy, Pproxy, Squid, open_proxy

ORIGIN_SCRIPT = """
import asyncio

async def echo(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()

async def discard(reader, writer):
    while await reader.read(1 << 20):
        pass
    writer.close()

async def main():
    e = await asyncio.start_server(echo, "127.0.0.1", 0)
    d = await asyncio.start_server(discard, "127.0.0.1", 0)
    print(e.sockets[0].getsockname()[1], d.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().create_future()

asyncio.run(main())
"""

CHUNK = b"\x5a" * 65536


@contextlib.asynccontextmanager
async def squid(directory: Path) -> AsyncIterator[str | None]:
    """squid allowing CONNECT to any port, or None (with a note) when it is missing."""
    peer = Squid(allow_ports=None)
    reason = peer.missing()
    if reason is not None:
        print(f"  squid: not measured ({reason})", file=sys.stderr)
        yield None
        return
    async with open_proxy(peer, directory=directory) as proxy:
        yield proxy.url


async def throughput_mb_s(
    proxy: str | None, port: int, tunnels: int, seconds: float, *, delivered: bool = False
) -> float:
    """MB/s written into ``tunnels`` tunnels to the discard port. With
    ``delivered``, the clock stops only when the discard origin has read
    everything (each tunnel half-closed, then its EOF awaited), so bytes still
    sitting in socket buffers along a long chain do not count as moved."""
    total = 0
    streams = [
        await tunnelws.open_tunnel("127.0.0.1", port, scheme="http", proxy=proxy)
        for _ in range(tunnels)
    ]
    deadline = trio.current_time() + seconds

    async def pump(stream: trio.abc.Stream) -> None:
        nonlocal total
        while trio.current_time() < deadline:
            await stream.send_all(CHUNK)
            total += len(CHUNK)
        if delivered:
            await stream.send_eof()  # type: ignore[attr-defined]
            while await stream.receive_some():
                pass

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for stream in streams:
            nursery.start_soon(pump, stream)
    elapsed = time.perf_counter() - started
    for stream in streams:
        await stream.aclose()
    return total / elapsed / 1e6


async def median_round_trip_us(proxy: str | None, port: int, seconds: float) -> float:
    stream = await tunnelws.open_tunnel("127.0.0.1", port, scheme="http", proxy=proxy)
    samples = []
    deadline = time.perf_counter() + seconds
    async with stream:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await stream.send_all(b"ping")
            received = b""
            while len(received) < 4:
                received += await stream.receive_some()
            samples.append((time.perf_counter() - started) * 1e6)
    return statistics.median(samples)


async def measure(seconds: float, rounds: int) -> list[tuple[str, float, float, float]]:
    """Interleaved rounds, proxy order rotating, medians reported: on a
    2-core machine a single pass mostly measures what else was running."""
    origin_ready = re.compile(rb"^(\d+) (\d+)\s", re.M)
    with tempfile.TemporaryDirectory(prefix="tunnelws-relay-") as tmp:
        return await _measure(Path(tmp), origin_ready, seconds, rounds)


async def _measure(
    directory: Path, origin_ready: re.Pattern[bytes], seconds: float, rounds: int
) -> list[tuple[str, float, float, float]]:
    async with (
        spawn([sys.executable, "-u", "-c", ORIGIN_SCRIPT], origin_ready) as ports,
        open_proxy(CompanionProxy(), directory=directory) as companion,
        open_proxy(Pproxy(), directory=directory) as pproxy,
        squid(directory) as squid_url,
    ):
        echo_port, discard_port = int(ports.group(1)), int(ports.group(2))
        proxies = {"tunnelws proxy": companion.url, "pproxy": pproxy.url}
        if squid_url:
            proxies["squid"] = squid_url
        samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in proxies}
        slice_ = seconds / rounds
        for round_ in range(rounds):
            names = list(proxies)
            names = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in names:
                url = proxies[name]
                one = await throughput_mb_s(url, discard_port, 1, slice_)
                hundred = await throughput_mb_s(url, discard_port, 100, slice_)
                # Paired with a direct sample taken right before it.
                direct = await median_round_trip_us(None, echo_port, slice_ / 2)
                added = await median_round_trip_us(url, echo_port, slice_ / 2) - direct
                samples[name].append((one, hundred, added))
    rows = []
    for name, values in samples.items():
        one, hundred, added = (statistics.median(column) for column in zip(*values, strict=True))
        rows.append((name, one, hundred, added))
        print(
            f"  {name}: {one:.0f} MB/s, {hundred:.0f} MB/s x100, +{added:.0f} us", file=sys.stderr
        )
    return rows


def render(rows: list[tuple[str, float, float, float]]) -> str:
    base = {name: (one, hundred, added) for name, one, hundred, added in rows}["pproxy"]
    lines = [
        "| proxy | 1 tunnel (MB/s) | 100 tunnels (MB/s) | added latency (us) "
        "| vs pproxy: throughput 1 / 100, latency |",
        "|---|---:|---:|---:|---|",
    ]
    for name, one, hundred, added in rows:
        lines.append(
            f"| {name} | {one:,.0f} | {hundred:,.0f} | {added:,.0f} | "
            f"{one / base[0]:.2f} / {hundred / base[1]:.2f}, {added / base[2]:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per proxy, all rounds")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(render(trio.run(measure, args.seconds, args.rounds)))


if __name__ == "__main__":
    main()
