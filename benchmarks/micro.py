"""Micro-timings behind docs/benchmarks.md's notes on 64 KiB round trips.

Two measurements, each side by side in one run:

- **masking 64 KiB** (what a client does to every frame it sends):
  python-websockets' C ``apply_mask`` (what tunnelws uses, ``tunnelws._frames``),
  wsaccel's C byte loop (what it used before, when installed) and wsproto's
  pure-Python masker; microseconds per call, the best of several repeats;
- **client CPU per 64 KiB round trip, no proxy**: tunnelws and
  python-websockets' trio client against the same python-websockets asyncio
  echo origin (in its own process, as in ``run.py``); this process's CPU time
  over the round trips, divided by their number, the median of several rounds.

    .venv/bin/python benchmarks/micro.py [--round-trips 2000] [--rounds 5]

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import time
import timeit
from collections.abc import Callable

import trio
import websockets
import wsproto.frame_protocol
from websockets.speedups import apply_mask

import tunnelws
from _processes import spawn
from run import CLIENTS, ORIGIN_SCRIPT, Peers

SIZE = 65536


def masking_us(repeats: int = 7) -> dict[str, float]:
    """Microseconds to mask SIZE bytes, best of ``repeats``, per masker."""
    payload = os.urandom(SIZE)
    key = os.urandom(4)
    maskers: dict[str, Callable[[], object]] = {
        "websockets.speedups.apply_mask (C; tunnelws)": lambda: apply_mask(payload, key),
        "wsproto (pure Python)": lambda: (
            wsproto.frame_protocol.XorMaskerSimple(key).process(bytearray(payload))
        ),
    }
    try:  # no longer a dependency
        from wsaccel.xormask import XorMaskerSimple
    except ImportError:
        pass
    else:
        maskers["wsaccel (C byte loop)"] = lambda: XorMaskerSimple(key).process(payload)
    results = {}
    for name, mask in maskers.items():
        number = 20 if "pure Python" in name else 2000
        best = min(timeit.repeat(mask, number=number, repeat=repeats))
        results[name] = best / number * 1e6
    return results


async def cpu_us_per_round_trip(url: str, round_trips: int, rounds: int) -> dict[str, float]:
    """Median over ``rounds`` of this process's CPU microseconds per 64 KiB
    round trip; ``run.py``'s two clients, without its proxy."""
    message = os.urandom(SIZE)
    direct = Peers(url, proxy_url=None)
    samples: dict[str, list[float]] = {name: [] for name in CLIENTS}
    for _ in range(rounds):
        for name, connect in CLIENTS.items():  # interleaved: both see the same machine
            async with connect(direct, False) as client:
                for _ in range(50):  # warm up
                    await client.send(message)
                    await client.recv()
                started = time.process_time()
                for _ in range(round_trips):
                    await client.send(message)
                    assert len(await client.recv()) == SIZE
                used = time.process_time() - started
            samples[name].append(used / round_trips * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


async def measure(args: argparse.Namespace) -> tuple[dict[str, float], dict[str, float]]:
    masks = masking_us()
    ready = re.compile(rb"^(\d+)\s", re.M)
    async with spawn([sys.executable, "-u", "-c", ORIGIN_SCRIPT], ready) as origin:
        url = f"ws://127.0.0.1:{int(origin.group(1))}/"
        cpu = await cpu_us_per_round_trip(url, args.round_trips, args.rounds)
    return masks, cpu


def render(masks: dict[str, float], cpu: dict[str, float]) -> str:
    lines = [
        f"Python {platform.python_version()}, trio {trio.__version__}, "
        f"websockets {websockets.__version__}, tunnelws {tunnelws.__version__}, "
        f"{os.cpu_count()} cores.",
        "",
        "| measurement | µs |",
        "|---|---:|",
    ]
    lines += [f"| mask 64 KiB: {name} | {value:,.1f} |" for name, value in masks.items()]
    lines += [
        f"| client CPU per 64 KiB round trip, no proxy: {name} | {value:,.1f} |"
        for name, value in cpu.items()
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round-trips", type=int, default=2000, help="per client and round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the median is reported")
    args = parser.parse_args()
    print(render(*trio.run(measure, args)))


if __name__ == "__main__":
    main()
