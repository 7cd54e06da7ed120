"""The HTTP fallback side by side with native WebSocket and python-socketio, in one run.

Everything goes through the same companion proxy (``tunnelws proxy``, its own
process, the ``open`` profile): native WebSocket through a CONNECT tunnel, the
fallback (``fallback="only"``) and python-socketio's Engine.IO long-polling as
forwarded absolute-form requests. The origin is ``tunnelws serve`` (which
offers the fallback on /echo); python-socketio's server is its ``AsyncServer``
on aiohttp, each in its own process. ``--squid`` repeats the latency rows
through Debian's squid (any port allowed) instead of the companion.

Rows (medians of ``--rounds`` interleaved rounds):

- round trip: one 100 B message and its echo, one at a time;
- pipelined: ``--messages`` 100 B messages in batches of ``WINDOW`` in flight;
- native failure to first fallback message: through a forward-only proxy
  (``--profile forward-only``, CONNECT answered 405), ``fallback="auto"``
  from the call to the first echo, against the native failure alone
  (``fallback="never"``) plus two fallback round trips.

    .venv/bin/python benchmarks/fallback.py [--rounds 5] [--messages 2000] [--squid]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio

from tunnelws import TunnelError, open_websocket

MESSAGE = "x" * 100
ROUND_TRIPS = 200
# Pipelining: batches of WINDOW messages in flight. python-socketio 5.18
# loses echoes when 20 or more are emitted back to back over polling (no
# echo for 10 s, also without a proxy), so both sides get the same window.
WINDOW = 5
TUNNELWS = [sys.executable, "-m", "tunnelws"]
SOCKETIO_SERVER = """
import socketio, sys
from aiohttp import web
sio = socketio.AsyncServer(async_mode="aiohttp", transports=["polling"])
@sio.on("echo")
async def echo(sid, data):
    await sio.emit("echo", data, to=sid)
app = web.Application()
sio.attach(app)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=lambda *a: None)
"""


@contextmanager
def process(argv: list[str], ready: str) -> Iterator[re.Match[str]]:
    """Run ``argv`` until the block ends; yield the first output match of ``ready``."""
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert child.stdout is not None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                raise RuntimeError(f"{argv} exited before it was ready")
            found = re.search(ready, line)
            if found:
                # Keep reading its output, so a full pipe never blocks it.
                threading.Thread(target=child.stdout.read, daemon=True).start()
                yield found
                return
        raise RuntimeError(f"{argv} not ready within 15 s")
    finally:
        child.kill()
        child.wait()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def wait_listening(argv: list[str], port: int) -> Iterator[None]:
    import socket

    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield
    finally:
        child.kill()
        child.wait()


# -- tunnelws -------------------------------------------------------------------


async def round_trip_ms(url: str, proxy: str, fallback: Any) -> float:
    async with open_websocket(url, proxy=proxy, fallback=fallback) as ws:
        for _ in range(10):  # warm up (connections, streaming mode chosen)
            await ws.send(MESSAGE)
            await ws.receive()
        times = []
        for _ in range(ROUND_TRIPS):
            begin = time.perf_counter()
            await ws.send(MESSAGE)
            await ws.receive()
            times.append(time.perf_counter() - begin)
    return statistics.median(times) * 1000


async def pipelined_per_s(url: str, proxy: str, fallback: Any, count: int) -> float:
    async with open_websocket(url, proxy=proxy, fallback=fallback) as ws:
        await ws.send(MESSAGE)
        await ws.receive()
        begin = time.perf_counter()
        for _ in range(count // WINDOW):
            for _ in range(WINDOW):
                await ws.send(MESSAGE)
            for _ in range(WINDOW):
                await ws.receive()
        return count // WINDOW * WINDOW / (time.perf_counter() - begin)


async def failure_then_first_message(url: str, proxy: str) -> tuple[float, float]:
    """(native failure alone, auto: call to first echo), in ms."""
    begin = time.perf_counter()
    try:
        async with open_websocket(url, proxy=proxy, fallback="never"):
            raise RuntimeError("the forward-only proxy let a native WebSocket through")
    except TunnelError:
        failed = time.perf_counter() - begin
    begin = time.perf_counter()
    async with open_websocket(url, proxy=proxy, fallback="auto") as ws:
        await ws.send(MESSAGE)
        await ws.receive()
        assert ws.transport == "http-fallback"
        first = time.perf_counter() - begin
    return failed * 1000, first * 1000


# -- python-socketio ------------------------------------------------------------


async def socketio_rates(url: str, proxy: str, count: int) -> tuple[float, float]:
    """(round trip ms, pipelined messages/s) for python-socketio's client over
    Engine.IO polling through ``proxy``."""
    import aiohttp
    import socketio

    async with aiohttp.ClientSession(proxy=proxy) as http:
        client = socketio.AsyncClient(http_session=http)
        queue: asyncio.Queue[str] = asyncio.Queue()
        client.on("echo", queue.put_nowait)
        await client.connect(url, transports=["polling"])
        try:
            for _ in range(10):
                await client.emit("echo", MESSAGE)
                await queue.get()
            times = []
            for _ in range(ROUND_TRIPS):
                begin = time.perf_counter()
                await client.emit("echo", MESSAGE)
                await queue.get()
                times.append(time.perf_counter() - begin)
            begin = time.perf_counter()
            for _ in range(count // WINDOW):
                for _ in range(WINDOW):
                    await client.emit("echo", MESSAGE)
                for _ in range(WINDOW):
                    await asyncio.wait_for(queue.get(), 10)
            rate = count // WINDOW * WINDOW / (time.perf_counter() - begin)
        finally:
            await client.disconnect()
    return statistics.median(times) * 1000, rate


# -- the run ----------------------------------------------------------------------


def measure(args: argparse.Namespace) -> dict[str, list[float]]:
    rows: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        rows.setdefault(name, []).append(value)

    sio_port = free_port()
    with (
        process([*TUNNELWS, "serve", "--port", "0"], r"echo\s+(ws://\S+)") as origin,
        process([*TUNNELWS, "proxy", "--listen", "127.0.0.1:0"], r"on (http://\S+)") as open_,
        process(
            [*TUNNELWS, "proxy", "--listen", "127.0.0.1:0", "--profile", "forward-only"],
            r"on (http://\S+)",
        ) as forward_only,
        wait_listening([sys.executable, "-c", SOCKETIO_SERVER, str(sio_port)], sio_port),
        squid_proxy(args.squid) as squid,
    ):
        url, proxy = origin.group(1), open_.group(1)
        sio_url = f"http://127.0.0.1:{sio_port}"
        for index in range(args.rounds):
            print(f"round {index + 1}/{args.rounds}", file=sys.stderr, flush=True)
            steps: list[Callable[[], None]] = [
                lambda: add("native rtt", trio.run(round_trip_ms, url, proxy, "never")),
                lambda: add("fallback rtt", trio.run(round_trip_ms, url, proxy, "only")),
                lambda: add(
                    "fallback pipe",
                    trio.run(pipelined_per_s, url, proxy, "only", args.messages),
                ),
                lambda: add(
                    "native pipe", trio.run(pipelined_per_s, url, proxy, "never", args.messages)
                ),
                lambda: [
                    add(name, value)
                    for name, value in zip(
                        ("socketio rtt", "socketio pipe"),
                        asyncio.run(socketio_rates(sio_url, proxy, args.messages)),
                        strict=True,
                    )
                ]
                and None,
                lambda: [
                    add(name, value)
                    for name, value in zip(
                        ("native failure", "failure to first message"),
                        trio.run(failure_then_first_message, url, forward_only.group(1)),
                        strict=True,
                    )
                ]
                and None,
            ]
            if squid is not None:
                steps += [
                    lambda: add("squid native rtt", trio.run(round_trip_ms, url, squid, "never")),
                    lambda: add("squid fallback rtt", trio.run(round_trip_ms, url, squid, "only")),
                ]
            # A rotating order, so no row always runs first (or last) in a round.
            shift = index % len(steps)
            for step in steps[shift:] + steps[:shift]:
                step()
    return {name: [statistics.median(values), *values] for name, values in rows.items()}


@contextmanager
def squid_proxy(wanted: bool) -> Iterator[str | None]:
    if not wanted:
        yield None
        return

    directory = Path(tempfile.mkdtemp(prefix="bench-squid-"))
    port = free_port()
    config = directory / "squid.conf"
    config.write_text(
        f"http_port 127.0.0.1:{port}\nhttp_access allow all\nacl all_ports port 1-65535\n"
        "cache deny all\nshutdown_lifetime 0 seconds\n"
        f"pid_filename {directory}/squid.pid\ncache_log {directory}/cache.log\n"
        "access_log none\nhttp_upgrade_request_protocols WebSocket allow all\n"
    )
    argv = ["squid", "-N", "-f", str(config)]
    with wait_listening(argv, port):
        yield f"http://127.0.0.1:{port}"


def render(rows: dict[str, list[float]], rounds: int) -> str:
    def m(name: str) -> float:
        return rows[name][0]

    lines = [
        f"| measurement (median of {rounds} rounds) | fallback | anchor | ratio | target |",
        "|---|---:|---:|---:|---|",
        f"| round trip via the companion, ms (anchor: native WebSocket) | {m('fallback rtt'):.2f} "
        f"| {m('native rtt'):.2f} | {m('fallback rtt') / m('native rtt'):.1f}× | ≤ 2× |",
    ]
    if "squid fallback rtt" in rows:
        ratio = m("squid fallback rtt") / m("squid native rtt")
        lines.append(
            f"| round trip via squid, ms (anchor: native WebSocket) | "
            f"{m('squid fallback rtt'):.2f} | {m('squid native rtt'):.2f} | {ratio:.1f}× | ≤ 2× |"
        )
    lines += [
        f"| pipelined 100 B, msgs/s (anchor: python-socketio polling) | {m('fallback pipe'):,.0f} "
        f"| {m('socketio pipe'):,.0f} | {m('fallback pipe') / m('socketio pipe'):.1f}× | ≥ 1.5× |",
        f"| round trip, ms (anchor: python-socketio polling) | {m('fallback rtt'):.2f} "
        f"| {m('socketio rtt'):.2f} | {m('fallback rtt') / m('socketio rtt'):.1f}× | – |",
        f"| pipelined 100 B, msgs/s (native WebSocket, for scale) | {m('fallback pipe'):,.0f} "
        f"| {m('native pipe'):,.0f} | {m('fallback pipe') / m('native pipe'):.2f}× | – |",
    ]
    budget = m("native failure") + 2 * m("fallback rtt")
    lines.append(
        f"| native failure (405) to first fallback echo, ms (anchor: the failure "
        f"{m('native failure'):.1f} ms + 2 round trips) | {m('failure to first message'):.1f} "
        f"| {budget:.1f} | {m('failure to first message') / budget:.1f}× | ≤ 1× |"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--squid", action="store_true", help="also latency through squid")
    args = parser.parse_args()
    os.environ.pop("http_proxy", None)
    rows = measure(args)
    print(render(rows, args.rounds))


if __name__ == "__main__":
    main()
