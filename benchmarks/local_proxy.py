"""Local authenticating helpers: ``tunnelws local-proxy`` vs px, in one run.

Both helpers run in their own process with their defaults, in front of the
same upstream (the companion proxy, in its own process, demanding Basic or
NTLM), and are measured the same way as benchmarks/relay.py measures proxies:
throughput through CONNECT tunnels (64 KiB writes, 1 and 100 concurrent
tunnels, MB/s delivered to the origin: the clock stops when the origin has
read the last byte) and the latency the helper adds to a small round trip (median
through helper + upstream minus median through the upstream alone). The
round trips take turns, one through each helper and one through the upstream
alone, so all see the same background load; rounds interleave the helpers,
medians are reported.

    .venv/bin/python benchmarks/local_proxy.py [--seconds 15] [--rounds 3]

px comes from PyPI (``px-proxy``) in its own venv (``make .venv-px/.installed``);
without it only local-proxy is measured.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import trio

import tunnelws
from _processes import spawn
from relay import ORIGIN_SCRIPT, throughput_mb_s

ROOT = Path(__file__).resolve().parent.parent
PX = ROOT / ".venv-px" / "bin" / "px"
PASSWORD = "bench-pw"
USERS = {"basic": "alice", "ntlm": "CORP\\alice"}
TUNNELWS = [sys.executable, "-u", "-m", "tunnelws"]
LISTENING = re.compile(rb"listening on (http://\S+)")
ALONE = "upstream alone"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def px(upstream: str, scheme: str) -> AsyncIterator[str | None]:
    """px in front of ``upstream`` (host:port), or None when not installed."""
    if not PX.exists():
        print("  px: not installed (make .venv-px/.installed)", file=sys.stderr)
        yield None
        return
    port = _free_port()
    env = {**os.environ, "PX_PASSWORD": PASSWORD}
    args = [str(PX), f"--proxy={upstream}", f"--port={port}", f"--username={USERS[scheme]}"]
    args.append(f"--auth={scheme.upper()}")
    process = await trio.lowlevel.open_process(
        args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        with trio.fail_after(15):
            while True:
                try:
                    probe = await trio.open_tcp_stream("127.0.0.1", port)
                except OSError:
                    await trio.sleep(0.1)
                    continue
                await probe.aclose()
                break
        yield f"http://127.0.0.1:{port}"
    finally:
        process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


async def interleaved_round_trips_us(
    proxies: dict[str, str], port: int, seconds: float
) -> dict[str, float]:
    """Median 4-byte round trip to the echo ``port`` through each proxy, the
    proxies taking turns one round trip at a time (order rotating): on 2
    cores the background load swings faster than a measurement window, and
    separate windows measured the load more than the helpers."""
    streams = {
        name: await tunnelws.open_tunnel("127.0.0.1", port, scheme="http", proxy=url)
        for name, url in proxies.items()
    }
    samples: dict[str, list[float]] = {name: [] for name in proxies}
    order = list(streams)
    deadline = time.perf_counter() + seconds
    try:
        while time.perf_counter() < deadline:
            order = order[1:] + order[:1]
            for name in order:
                stream = streams[name]
                started = time.perf_counter()
                await stream.send_all(b"ping")
                received = b""
                while len(received) < 4:
                    received += await stream.receive_some()
                samples[name].append((time.perf_counter() - started) * 1e6)
    finally:
        for stream in streams.values():
            await stream.aclose()
    return {name: statistics.median(values) for name, values in samples.items()}


async def measure(seconds: float, rounds: int) -> list[tuple[str, str, float, float, float]]:
    rows = []
    origin_ready = re.compile(rb"^(\d+) (\d+)\s", re.M)
    async with spawn([sys.executable, "-u", "-c", ORIGIN_SCRIPT], origin_ready) as ports:
        echo, discard = int(ports.group(1)), int(ports.group(2))
        for scheme in ("basic", "ntlm"):
            user = USERS[scheme]
            companion_args = ["proxy", "--auth", f"{user}:{PASSWORD}", "--auth-scheme", scheme]
            async with spawn(TUNNELWS + companion_args, LISTENING) as companion:
                upstream = companion.group(1).decode().removeprefix("http://")
                direct_upstream = f"http://{quote(user, safe='')}:{PASSWORD}@{upstream}"
                os.environ["TUNNELWS_PROXY_PASSWORD"] = PASSWORD
                local_args = ["local-proxy", "--listen", "127.0.0.1:0"]
                local_args += ["--proxy", f"http://{upstream}", "--proxy-user", user]
                async with (
                    spawn(TUNNELWS + local_args, LISTENING) as local,
                    px(upstream, scheme) as px_url,
                ):
                    helpers = {"tunnelws local-proxy": local.group(1).decode()}
                    if px_url:
                        helpers["px"] = px_url
                    samples: dict[str, list[tuple[float, float, float]]] = {h: [] for h in helpers}
                    slice_ = seconds / rounds
                    for round_ in range(rounds):
                        # Latency first, on a quiet chain: every helper and
                        # the upstream alone in one interleaved window.
                        medians = await interleaved_round_trips_us(
                            {ALONE: direct_upstream, **helpers}, echo, slice_ * len(helpers) / 2
                        )
                        names = list(helpers)
                        names = names[round_ % len(names) :] + names[: round_ % len(names)]
                        for name in names:
                            url = helpers[name]
                            one = await throughput_mb_s(url, discard, 1, slice_, delivered=True)
                            hundred = await throughput_mb_s(
                                url, discard, 100, slice_, delivered=True
                            )
                            samples[name].append((one, hundred, medians[name] - medians[ALONE]))
                for name, values in samples.items():
                    one, hundred, added = (
                        statistics.median(column) for column in zip(*values, strict=True)
                    )
                    rows.append((scheme, name, one, hundred, added))
                    print(
                        f"  {scheme} {name}: {one:.0f} MB/s, {hundred:.0f} MB/s x100, "
                        f"+{added:.0f} us",
                        file=sys.stderr,
                    )
    return rows


def render(rows: list[tuple[str, str, float, float, float]]) -> str:
    lines = [
        "| upstream auth | helper | 1 tunnel (MB/s) | 100 tunnels (MB/s) | added latency (us) "
        "| vs px: throughput 1 / 100, latency |",
        "|---|---|---:|---:|---:|---|",
    ]
    base = {
        scheme: (one, hundred, added) for scheme, name, one, hundred, added in rows if name == "px"
    }
    for scheme, name, one, hundred, added in rows:
        ratio = "n/a"
        if scheme in base:
            b = base[scheme]
            ratio = f"{one / b[0]:.2f} / {hundred / b[1]:.2f}, {added / b[2]:.2f}"
        lines.append(
            f"| {scheme.upper()} | {name} | {one:,.0f} | {hundred:,.0f} | {added:,.0f} | {ratio} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="per helper and scheme")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    print(render(trio.run(measure, args.seconds, args.rounds)))
    print(f"  ({time.perf_counter() - started:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
