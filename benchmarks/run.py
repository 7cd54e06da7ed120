"""tunnelws vs python-websockets 17 (its trio client), through the same pproxy.

Both clients run in this process, one after the other for each row, against
the same echo origin and the same pproxy (each in its own process), so the
numbers are comparable within one run. Prints a Markdown table; the ratio
column is tunnelws / websockets (> 1 means tunnelws is faster).

    .venv/bin/python benchmarks/run.py [--seconds 2] [--connects 30]

The origin is python-websockets' asyncio echo server (fast, C-accelerated
masking, not ours), so it is not the bottleneck of either client. Compression
is off for websockets, since tunnelws does not negotiate permessage-deflate.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import tempfile
import time
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
    async with serve(echo, "127.0.0.1", 0, max_size=None, compression=None) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.get_running_loop().create_future()

asyncio.run(main())
"""


class Client(Protocol):
    async def send(self, message: bytes) -> None: ...
    async def recv(self) -> bytes: ...


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
async def tunnelws_client(peers: Peers) -> AsyncIterator[Client]:
    async with tunnelws.open_websocket(
        peers.origin_url, proxy=peers.proxy_url, max_message_size=2**24
    ) as ws:

        class Adapter:
            send = staticmethod(ws.send)

            @staticmethod
            async def recv() -> bytes:
                return await ws.receive()  # type: ignore[return-value]

        yield Adapter()


@asynccontextmanager
async def websockets_client(peers: Peers) -> AsyncIterator[Client]:
    async with websockets.trio.client.connect(
        peers.origin_url,
        proxy=peers.proxy_url,
        compression=None,
        ping_interval=None,
        max_size=2**24,
    ) as ws:

        class Adapter:
            send = staticmethod(ws.send)

            @staticmethod
            async def recv() -> bytes:
                return await ws.recv()  # type: ignore[return-value]

        yield Adapter()


CLIENTS: dict[str, Callable[[Peers], Any]] = {
    "tunnelws": tunnelws_client,
    "websockets": websockets_client,
}


# -- measurements ----------------------------------------------------------------


async def round_trips_per_s(client: Client, size: int, seconds: float) -> float:
    message = os.urandom(size)
    count = 0
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        await client.send(message)
        reply = await client.recv()
        assert len(reply) == size
        count += 1
    return count / (time.perf_counter() - started)


async def pipelined_msgs_per_s(client: Client, size: int, seconds: float) -> float:
    """Send for ``seconds`` without waiting for echoes; a final 1-byte message,
    echoed last, tells the receiver it has seen everything."""
    message = os.urandom(size)
    received = 0
    started = time.perf_counter()

    async def sender() -> None:
        deadline = started + seconds
        while time.perf_counter() < deadline:
            await client.send(message)
        await client.send(b"!")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        while len(await client.recv()) == size:
            received += 1
    return received / (time.perf_counter() - started)


async def connect_to_first_echo_ms(name: str, peers: Peers, connects: int) -> float:
    samples = []
    for _ in range(connects):
        started = time.perf_counter()
        async with CLIENTS[name](peers) as client:
            await client.send(b"x")
            await client.recv()
            samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


# A measurement that makes no progress for this long is reported as a hang.
HANG_SECONDS = 20.0

Row = tuple[str, float | None, float | None, str]


async def measure(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    async with peers() as network:

        async def both(label: str, unit: str, run: Callable[[str], Awaitable[float]]) -> None:
            values: dict[str, float | None] = {}
            for name in CLIENTS:
                values[name] = None
                with trio.move_on_after(args.seconds * 3 + HANG_SECONDS):
                    values[name] = await run(name)
            rows.append((label, values["tunnelws"], values["websockets"], unit))
            print(f"  {label}: {values} {unit}", file=sys.stderr)

        for size, size_label in ((100, "100 B"), (65536, "64 KiB")):
            for kind, fn in (
                ("round trips", round_trips_per_s),
                ("pipelined", pipelined_msgs_per_s),
            ):

                async def run(name: str, fn: Any = fn, size: int = size) -> float:
                    async with CLIENTS[name](network) as client:
                        return float(await fn(client, size, args.seconds))

                await both(f"{kind}, {size_label}", "msgs/s", run)

        async def connect(name: str) -> float:
            return await connect_to_first_echo_ms(name, network, args.connects)

        await both("connect to first echo (median)", "ms", connect)
    return rows


def render(rows: list[Row]) -> str:
    lines = [
        f"Python {platform.python_version()}, trio {trio.__version__}, "
        f"websockets {websockets.__version__}, tunnelws {tunnelws.__version__}, "
        f"{os.cpu_count()} cores; through pproxy on loopback.",
        "",
        "| measurement | tunnelws | websockets | ratio (higher is better for tunnelws) |",
        "|---|---:|---:|---:|",
    ]

    def cell(value: float | None) -> str:
        return "hangs" if value is None else f"{value:,.1f}"

    for label, ours, theirs, unit in rows:
        if ours is None or theirs is None:
            ratio = "n/a"
        else:
            # For times lower is better: invert so the ratio always reads the same way.
            ratio = f"{theirs / ours if unit == 'ms' else ours / theirs:.2f}"
        lines.append(f"| {label} ({unit}) | {cell(ours)} | {cell(theirs)} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--connects", type=int, default=30, help="connections for the median")
    args = parser.parse_args()
    print(render(trio.run(measure, args)))


if __name__ == "__main__":
    main()
