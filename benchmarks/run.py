"""tunnelws vs python-websockets 17 (its trio client), through the same pproxy.

Both clients run in this process against the same echo origin and the same
pproxy (each in its own process), each on one connection kept open for the
row. Every row is measured in interleaved rounds, the two clients back to
back in each round (order alternating), so both see the same load from
whatever else runs on the machine; values are medians, and the ratio column
is the median of the per-round ratios tunnelws / websockets (> 1 means
tunnelws is faster), with their range. Prints Markdown.

    .venv/bin/python benchmarks/run.py [--seconds 1] [--rounds 9] [--connects 30]
                                       [--only SUBSTRING]

The origin is python-websockets' asyncio echo server (C-accelerated masking,
permessage-deflate with its defaults), so it is the same peer for both.
Rows without compression: both clients say compression=None and send random
bytes. Rows with compression: both clients use their defaults (tunnelws
Deflate(), websockets "deflate") and send JSON-like text.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import trio
import websockets
import websockets.trio.client

import tunnelws
from _processes import spawn
from tunnelws_testnet.peers import Pproxy, open_proxy

ORIGIN_SCRIPT = """
import asyncio, sys
from websockets.asyncio.server import serve

async def echo(ws):
    async for message in ws:
        await ws.send(message)

async def main():
    async with serve(echo, "127.0.0.1", 0, max_size=None) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.get_running_loop().create_future()

asyncio.run(main())
"""

# Pipelined rows keep at most this many bytes (and messages) in flight, so
# that neither client can fill every socket buffer on the path: without a
# bound, python-websockets 17.4's trio client deadlocks at 64 KiB (see
# docs/benchmarks.md).
PIPELINE_BYTES = 1 << 20
PIPELINE_MESSAGES = 64


class Client(Protocol):
    async def send(self, message: str | bytes) -> None: ...
    async def recv(self) -> str | bytes: ...


@dataclass
class Peers:
    origin_url: str
    proxy_url: str | None  # None: straight to the origin (benchmarks/micro.py)


@asynccontextmanager
async def peers() -> AsyncIterator[Peers]:
    with tempfile.TemporaryDirectory(prefix="tunnelws-bench-") as tmp:
        async with (
            spawn([sys.executable, "-u", "-c", ORIGIN_SCRIPT], re.compile(rb"^(\d+)\s", re.M)) as o,
            open_proxy(Pproxy(), directory=Path(tmp)) as pproxy,
        ):
            yield Peers(f"ws://127.0.0.1:{int(o.group(1))}/", pproxy.url)


# -- the two clients behind one tiny interface -----------------------------------


@asynccontextmanager
async def tunnelws_client(peers: Peers, compress: bool) -> AsyncIterator[Client]:
    async with tunnelws.open_websocket(
        peers.origin_url,
        proxy=peers.proxy_url,
        max_message_size=2**24,
        compression="deflate" if compress else None,
    ) as ws:
        assert bool(ws.extensions) == compress

        class Adapter:
            send = staticmethod(ws.send)
            recv = staticmethod(ws.receive)

        yield Adapter()


@asynccontextmanager
async def websockets_client(peers: Peers, compress: bool) -> AsyncIterator[Client]:
    async with websockets.trio.client.connect(
        peers.origin_url,
        proxy=peers.proxy_url,
        compression="deflate" if compress else None,
        ping_interval=None,
        max_size=2**24,
    ) as ws:
        assert bool(ws.protocol.extensions) == compress

        class Adapter:
            send = staticmethod(ws.send)
            recv = staticmethod(ws.recv)

        yield Adapter()


CLIENTS: dict[str, Callable[[Peers, bool], Any]] = {
    "tunnelws": tunnelws_client,
    "websockets": websockets_client,
}


# -- payloads --------------------------------------------------------------------


def json_payloads(size: int, count: int = 32) -> list[str]:
    """``count`` different JSON documents of exactly ``size`` characters:
    event records with repeated keys and varying values, as an API sends."""
    rng = random.Random(size)
    documents = []
    for _ in range(count):
        records: list[dict[str, Any]] = []
        text = "[]"
        while len(text) < size:
            records.append(
                {
                    "id": rng.randrange(10**9),
                    "user": f"user{rng.randrange(1000)}",
                    "event": rng.choice(["click", "view", "purchase", "scroll"]),
                    "ts": 1_700_000_000 + rng.randrange(10**6),
                    "price": round(rng.random() * 100, 2),
                    "tags": rng.sample(["a", "b", "c", "d", "e", "f"], 2),
                }
            )
            text = json.dumps(records)
        documents.append(text[:size])
    return documents


def binary_payloads(size: int, count: int = 32) -> list[bytes]:
    return [os.urandom(size) for _ in range(count)]


def compressed_fraction(payloads: list[str], level: int) -> float:
    """Bytes on the wire per payload byte with a client's settings against
    this origin (window 12 bits, memory level 5, context kept)."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -12, 5)
    sent = sum(
        len(compressor.compress(p.encode()) + compressor.flush(zlib.Z_SYNC_FLUSH)) - 4
        for p in payloads * 4
    )
    return sent / sum(len(p) for p in payloads * 4)


# -- measurements ----------------------------------------------------------------


async def round_trips_per_s(client: Client, payloads: list[Any], seconds: float) -> float:
    count = 0
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    size = len(payloads[0])
    while time.perf_counter() < deadline:
        await client.send(payloads[count % len(payloads)])
        reply = await client.recv()
        assert len(reply) == size
        count += 1
    return count / (time.perf_counter() - started)


async def pipelined_msgs_per_s(client: Client, payloads: list[Any], seconds: float) -> float:
    """Send for ``seconds`` with a bounded number of echoes outstanding; a
    final short message, echoed last, tells the receiver it has seen all."""
    size = len(payloads[0])
    window = max(1, min(PIPELINE_MESSAGES, PIPELINE_BYTES // size))
    in_flight = trio.Semaphore(window)
    end = payloads[0][:1]
    received = 0
    started = time.perf_counter()

    async def sender() -> None:
        deadline = started + seconds
        sent = 0
        while time.perf_counter() < deadline:
            await in_flight.acquire()
            await client.send(payloads[sent % len(payloads)])
            sent += 1
        await client.send(end)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        while len(await client.recv()) == size:
            received += 1
            in_flight.release()
    return received / (time.perf_counter() - started)


async def connect_to_first_echo_ms(name: str, peers: Peers, connects: int) -> float:
    samples = []
    for _ in range(connects):
        started = time.perf_counter()
        async with CLIENTS[name](peers, False) as client:
            await client.send(b"x")
            await client.recv()
            samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


# A measurement that makes no progress for this long is reported as a hang.
HANG_SECONDS = 20.0


@dataclass
class Row:
    label: str
    unit: str
    ours: list[float | None]
    theirs: list[float | None]

    def ratios(self) -> list[float]:
        pairs = [(a, b) for a, b in zip(self.ours, self.theirs, strict=True) if a and b]
        # For times lower is better: invert so the ratio always reads the same way.
        return [b / a if self.unit == "ms" else a / b for a, b in pairs]


async def measure(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    async with peers() as network:

        async def interleaved(
            label: str, unit: str, run: Callable[[str, int], Awaitable[float]]
        ) -> None:
            if args.only and args.only not in label:
                return
            row = Row(label, unit, [], [])
            for round_ in range(args.rounds):
                names = list(CLIENTS) if round_ % 2 == 0 else list(reversed(CLIENTS))
                for name in names:
                    value = None
                    with trio.move_on_after(args.seconds * 3 + HANG_SECONDS):
                        value = await run(name, round_)
                    (row.ours if name == "tunnelws" else row.theirs).append(value)
            rows.append(row)
            print(f"  {label}: {row.ours} / {row.theirs} {unit}", file=sys.stderr)

        for compress in (False, True):
            for size, size_label in ((100, "100 B"), (65536, "64 KiB")):
                payloads: list[Any] = json_payloads(size) if compress else binary_payloads(size)
                for kind, fn in (
                    ("round trips", round_trips_per_s),
                    ("pipelined", pipelined_msgs_per_s),
                ):
                    # Both connections stay open for the whole row, so the
                    # rounds measure messages only.
                    async with (
                        tunnelws_client(network, compress) as ours,
                        websockets_client(network, compress) as theirs,
                    ):
                        clients = {"tunnelws": ours, "websockets": theirs}

                        async def run(
                            name: str,
                            round_: int,
                            fn: Any = fn,
                            payloads: Any = payloads,
                            clients: dict[str, Client] = clients,
                        ) -> float:
                            if round_ == 0:  # warm up (zlib state, caches)
                                await fn(clients[name], payloads, args.seconds / 4)
                            return float(await fn(clients[name], payloads, args.seconds))

                        suffix = ", deflate" if compress else ""
                        await interleaved(f"{kind}, {size_label}{suffix}", "msgs/s", run)

        async def connect(name: str, round_: int) -> float:
            return await connect_to_first_echo_ms(name, network, args.connects)

        await interleaved("connect to first echo (median)", "ms", connect)
    return rows


def render(rows: list[Row], rounds: int) -> str:
    lines = [
        f"Python {platform.python_version()}, trio {trio.__version__}, "
        f"websockets {websockets.__version__}, tunnelws {tunnelws.__version__}, "
        f"{os.cpu_count()} cores; through pproxy on loopback; medians of {rounds} "
        "interleaved rounds.",
        "",
        "| measurement | tunnelws | websockets | ratio (higher is better for tunnelws) |",
        "|---|---:|---:|---:|",
    ]

    def cell(values: list[float | None]) -> str:
        known = [v for v in values if v is not None]
        if len(known) < len(values):
            return "hangs"
        return f"{statistics.median(known):,.1f}"

    for row in rows:
        ratios = row.ratios()
        ratio = f"{statistics.median(ratios):.2f}" if ratios else "n/a"
        spread = f" ({min(ratios):.2f}–{max(ratios):.2f})" if len(ratios) > 1 else ""
        lines.append(
            f"| {row.label} ({row.unit}) | {cell(row.ours)} | {cell(row.theirs)} "
            f"| {ratio}{spread} |"
        )
    small, large = json_payloads(100), json_payloads(65536)
    lines += [
        "",
        "Compressed size of the JSON payloads (bytes sent per byte of message), "
        "tunnelws (level 3) / websockets (level 6): "
        f"100 B {compressed_fraction(small, 3):.2f} / {compressed_fraction(small, 6):.2f}, "
        f"64 KiB {compressed_fraction(large, 3):.2f} / {compressed_fraction(large, 6):.2f}.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per client and round")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds per row")
    parser.add_argument("--connects", type=int, default=30, help="connections for the median")
    parser.add_argument("--only", default="", help="only rows whose label contains this")
    args = parser.parse_args()
    print(render(trio.run(measure, args), args.rounds))


if __name__ == "__main__":
    main()
