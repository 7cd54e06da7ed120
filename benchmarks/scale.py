"""Many tunnels at once: client memory and connect rate at 10,000 WebSockets,
and proxy memory at 9,000 tunnels.

    .venv/bin/python benchmarks/scale.py [--connections 10000] [--waves 10]
                                         [--tunnels 9000] [--concurrency 100]

Part 1, the client. One process per client kind (tunnelws and
python-websockets 17's trio client) and compression setting opens
``--connections`` WebSockets, each echoing one message (so compression state
exists), and holds them all open. Through two pproxy processes (a process
here may hold 20,000 descriptors; a tunnel costs its proxy two) to one
python-websockets asyncio echo origin, permessage-deflate on its side.
Reported: connect rate (connections per second until all are open, at most
``--concurrency`` handshakes in flight) and memory per connection (growth of
the process's resident set, after a garbage collection, divided by the
count). Then all are closed, and the same number is opened and closed again
in ``--waves`` waves: descriptors before and after, and the resident set
after the first and the last wave (and after ``malloc_trim``, which hands
back what glibc keeps for reuse).

Part 2, the proxy. The companion proxy (`tunnelws proxy`) and pproxy, one
process each, hold ``--tunnels`` CONNECT tunnels (each with one byte echoed)
to a TCP echo origin; reported: the proxy process's resident-set growth per
tunnel.

Every process raises its descriptor limit to the hard limit.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import trio

from _processes import spawn

RAISE_LIMIT = (
    "import resource; soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE); "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard)); "
)
ORIGIN_SCRIPT = RAISE_LIMIT + """
import asyncio
from websockets.asyncio.server import serve

async def echo(ws):
    async for message in ws:
        await ws.send(message)

async def main():
    async with serve(echo, "127.0.0.1", 0, max_size=None, ping_interval=None,
                     backlog=4096) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.get_running_loop().create_future()

asyncio.run(main())
"""
TCP_ECHO_SCRIPT = RAISE_LIMIT + """
import asyncio

async def echo(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()

async def main():
    server = await asyncio.start_server(echo, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().create_future()

asyncio.run(main())
"""


def run_module(module: str, *args: str) -> list[str]:
    """``python -m module args`` with the descriptor limit raised first."""
    code = RAISE_LIMIT + f"import runpy, sys; sys.argv = {[module, *args]!r}; "
    code += f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    return [sys.executable, "-u", "-c", code]


def raise_descriptor_limit() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss_kib(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def settled_rss() -> int:
    gc.collect()
    return rss_kib()


# -- part 1: one client process ----------------------------------------------------

MESSAGE = json.dumps({"event": "hello", "user": "user42", "tags": ["a", "b"]})


def client_factory(kind: str, compress: bool) -> Callable[[str, str], Any]:
    if kind == "tunnelws":
        import tunnelws

        def tunnelws_connect(url: str, proxy: str) -> AbstractAsyncContextManager[Any]:
            return tunnelws.open_websocket(
                url, proxy=proxy, compression="deflate" if compress else None
            )

        return tunnelws_connect
    import websockets.trio.client

    def websockets_connect(url: str, proxy: str) -> AbstractAsyncContextManager[Any]:
        return websockets.trio.client.connect(
            url, proxy=proxy, compression="deflate" if compress else None, ping_interval=None
        )

    return websockets_connect


async def hold_open(
    connect: Callable[[str, str], Any],
    kind: str,
    url: str,
    proxies: list[str],
    count: int,
    concurrency: int,
    while_open: Callable[[], Any],
) -> tuple[float, int]:
    """Open ``count`` connections (echoing one message each), call
    ``while_open`` once all are open, then close them all. Returns the
    connect rate and the number of failures."""
    handshakes = trio.Semaphore(concurrency)
    everyone_open = trio.Event()
    release = trio.Event()
    opened = failed = 0

    async def one(proxy: str) -> None:
        nonlocal opened, failed
        await handshakes.acquire()
        holding = True
        try:
            async with connect(url, proxy) as ws:
                await ws.send(MESSAGE)
                reply = await (ws.receive() if kind == "tunnelws" else ws.recv())
                assert reply == MESSAGE
                handshakes.release()
                holding = False
                opened += 1
                if opened + failed == count:
                    everyone_open.set()
                await release.wait()
        except Exception as exc:  # reported as a count; the run goes on
            failed += 1
            if failed <= 3:
                print(f"  {kind}: connection failed: {exc!r}", file=sys.stderr)
            if opened + failed == count:
                everyone_open.set()
        finally:
            if holding:
                handshakes.release()

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(one, proxies[i % len(proxies)])
        await everyone_open.wait()
        rate = opened / (time.perf_counter() - started)
        while_open()
        release.set()
    return rate, failed


async def client_worker(args: argparse.Namespace) -> dict[str, Any]:
    raise_descriptor_limit()
    connect = client_factory(args.worker, args.compress)
    proxies = args.proxies.split(",")
    result: dict[str, Any] = {}
    # Warm up imports and caches, so the baseline is a steady state.
    await hold_open(connect, args.worker, args.origin, proxies, 20, 20, lambda: None)
    before = settled_rss()
    result["fds_before"] = open_descriptors()

    def measure_open() -> None:
        result["rss_open"] = settled_rss()
        result["fds_open"] = open_descriptors()

    rate, failed = await hold_open(
        connect, args.worker, args.origin, proxies, args.count, args.concurrency, measure_open
    )
    result.update(rate=rate, failed=failed)
    result["kib_per_connection"] = (result["rss_open"] - before) / args.count
    await trio.sleep(0.5)  # closed sockets leave the kernel's tables
    result["rss_closed"] = settled_rss()
    result["fds_closed"] = open_descriptors()
    for wave in range(args.waves):
        await hold_open(
            connect,
            args.worker,
            args.origin,
            proxies,
            args.count // args.waves,
            args.concurrency,
            lambda: None,
        )
        if wave == 0:
            # The steady state the waves start from: what the allocator kept
            # from the big batch is reused, not grown.
            await trio.sleep(0.5)
            result["rss_first_wave"] = settled_rss()
    await trio.sleep(0.5)
    result["rss_after_waves"] = settled_rss()
    result["fds_after_waves"] = open_descriptors()
    # What the allocator keeps for reuse is not a leak: give it back to see.
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    result["rss_trimmed"] = rss_kib()
    return result


async def run_client(kind: str, compress: bool, origin: str, proxies: list[str], args: Any) -> Any:
    command = [
        sys.executable,
        "-u",
        __file__,
        "--worker",
        kind,
        "--origin",
        origin,
        "--proxies",
        ",".join(proxies),
        "--count",
        str(args.connections),
        "--concurrency",
        str(args.concurrency),
        "--waves",
        str(args.waves),
    ] + (["--compress"] if compress else [])
    result = await trio.run_process(command, capture_stdout=True, stderr=None, check=True)
    return json.loads(result.stdout.decode().strip().splitlines()[-1])


# -- part 2: proxy memory per tunnel -------------------------------------------------


async def tunnel_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Client side of part 2: ``--count`` tunnels through ``--proxies`` to
    the echo port ``--origin``; reports nothing itself, the parent reads
    the proxy's memory while this holds the tunnels (a line on stdout)."""
    import tunnelws

    raise_descriptor_limit()
    port = int(args.origin)
    streams: list[trio.abc.Stream] = []
    limiter = trio.CapacityLimiter(args.concurrency)
    failed = 0

    async def one() -> None:
        nonlocal failed
        async with limiter:
            try:
                stream = await tunnelws.open_tunnel(
                    "127.0.0.1", port, scheme="http", proxy=args.proxies
                )
                await stream.send_all(b"x")
                assert await stream.receive_some(1) == b"x"
                streams.append(stream)
            except Exception as exc:
                failed += 1
                if failed <= 3:
                    print(f"  tunnel failed: {exc!r}", file=sys.stderr)

    async with trio.open_nursery() as nursery:
        for _ in range(args.count):
            nursery.start_soon(one)
    print(json.dumps({"open": len(streams), "failed": failed}), flush=True)
    await trio.to_thread.run_sync(sys.stdin.readline)  # the parent has measured
    for stream in streams:
        await stream.aclose()
    return {"closed": len(streams)}


async def proxy_memory(name: str, command: list[str], ready: re.Pattern[bytes], args: Any) -> Any:
    async with (
        spawn([sys.executable, "-u", "-c", TCP_ECHO_SCRIPT], re.compile(rb"^(\d+)\s", re.M)) as o,
        spawn(command, ready) as proxy,
    ):
        url = proxy.group(1).decode()
        url = url if url.startswith("http") else f"http://{url}"
        pid = _listener_pid(url)
        await trio.sleep(0.5)
        before = rss_kib(pid)
        worker = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-u",
                __file__,
                "--tunnel-worker",
                "--origin",
                o.group(1).decode(),
                "--proxies",
                url,
                "--count",
                str(args.tunnels),
                "--concurrency",
                str(args.concurrency),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert worker.stdout is not None and worker.stdin is not None
        line = b""
        while not line.endswith(b"\n"):
            line += await worker.stdout.receive_some(4096)
        report = json.loads(line)
        await trio.sleep(0.5)
        after = rss_kib(pid)
        await worker.stdin.send_all(b"\n")
        await worker.wait()
        report.update(name=name, kib_before=before, kib_open=after)
        report["kib_per_tunnel"] = (after - before) / max(1, report["open"])
        print(f"  {name}: {report}", file=sys.stderr)
        return report


def _listener_pid(url: str) -> int:
    """The pid of the process listening on ``url``'s port (the proxy; the
    spawned command may be a wrapper around it)."""
    port = int(url.rsplit(":", 1)[1])
    inode = None
    with open("/proc/net/tcp") as table:
        for line in list(table)[1:]:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":
                inode = fields[9]
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return int(pid)
        except OSError:
            continue
    raise RuntimeError(f"nobody listens on {url}")


# -- orchestration ---------------------------------------------------------------------


@asynccontextmanager
async def network() -> AsyncIterator[tuple[str, list[str]]]:
    proxy_ready = re.compile(rb"Serving on .*?:(\d+) by http")
    async with (
        spawn([sys.executable, "-u", "-c", ORIGIN_SCRIPT], re.compile(rb"^(\d+)\s", re.M)) as o,
        spawn(run_module("pproxy", "-l", "http://127.0.0.2:0"), proxy_ready) as p1,
        spawn(run_module("pproxy", "-l", "http://127.0.0.3:0"), proxy_ready) as p2,
    ):
        yield (
            f"ws://127.0.0.1:{int(o.group(1))}/",
            [f"http://127.0.0.2:{int(p1.group(1))}", f"http://127.0.0.3:{int(p2.group(1))}"],
        )


async def orchestrate(args: argparse.Namespace) -> None:
    raise_descriptor_limit()
    clients: list[tuple[str, bool, Any]] = []
    if args.connections:
        for compress in (False, True):
            for kind in ("tunnelws", "websockets"):
                # A fresh network per run: the origin's and proxies' memory
                # must not carry one client's leftovers into the next.
                async with network() as (origin, proxies):
                    result = await run_client(kind, compress, origin, proxies, args)
                print(f"  {kind} compress={compress}: {result}", file=sys.stderr)
                clients.append((kind, compress, result))
    proxies: list[Any] = []
    if args.tunnels:
        proxies.append(
            await proxy_memory(
                "tunnelws proxy",
                run_module("tunnelws", "proxy", "--listen", "127.0.0.4:0"),
                re.compile(rb"listening on (http://\S+)"),
                args,
            )
        )
        proxies.append(
            await proxy_memory(
                "pproxy",
                run_module("pproxy", "-l", "http://127.0.0.5:0"),
                re.compile(rb"Serving on .*?([\d.]+:\d+) by http"),
                args,
            )
        )
    print(render(clients, proxies, args))


def render(clients: list[tuple[str, bool, Any]], proxies: list[Any], args: Any) -> str:
    lines = [
        f"{args.connections:,} concurrent WebSockets through 2 pproxy processes, "
        f"{args.concurrency} handshakes in flight at most:",
        "",
        "| client | compression | connect rate (conn/s) | memory per connection (KiB) "
        "| failed | fds before → open → closed / after waves "
        f"| RSS (MiB) after wave 1 → after wave {args.waves} (trimmed) |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for kind, compress, r in clients:
        lines.append(
            f"| {kind} | {'deflate' if compress else 'none'} | {r['rate']:,.0f} "
            f"| {r['kib_per_connection']:.1f} | {r['failed']} "
            f"| {r['fds_before']} → {r['fds_open']} → {r['fds_closed']} / "
            f"{r['fds_after_waves']} | {r['rss_first_wave'] / 1024:.1f} → "
            f"{r['rss_after_waves'] / 1024:.1f} ({r['rss_trimmed'] / 1024:.1f}) |"
        )
    if proxies:
        lines += [
            "",
            f"{args.tunnels:,} CONNECT tunnels held by one proxy process:",
            "",
            "| proxy | tunnels open | failed | memory per tunnel (KiB) |",
            "|---|---:|---:|---:|",
        ]
        for p in proxies:
            lines.append(
                f"| {p['name']} | {p['open']:,} | {p['failed']} | {p['kib_per_tunnel']:.1f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--waves", type=int, default=10)
    parser.add_argument("--tunnels", type=int, default=9_000)
    parser.add_argument("--concurrency", type=int, default=100)
    # Internal: the worker processes.
    parser.add_argument("--worker", choices=["tunnelws", "websockets"], help=argparse.SUPPRESS)
    parser.add_argument("--tunnel-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--compress", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--origin", help=argparse.SUPPRESS)
    parser.add_argument("--proxies", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(trio.run(client_worker, args)))
    elif args.tunnel_worker:
        trio.run(tunnel_worker, args)
    else:
        trio.run(orchestrate, args)


if __name__ == "__main__":
    main()
