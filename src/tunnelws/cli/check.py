"""``tunnelws check URL``: walk the path to a WebSocket echo server step by
step (route, name resolution, TCP, CONNECT, TLS, upgrade, echo, idle, SSE),
time each step, and stop at the first broken one with a diagnosis and a
remedy. The exit code is the error taxonomy's (0 when everything works).
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from typing import Any

import trio

from .._check import CheckOptions, StepResult, run_check
from .._check._report import render_conclusion, render_step
from ._options import add_route_arguments, report_error, route_from_args


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "check",
        help="diagnose the path to a WebSocket server, step by step",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url", help="ws:// or wss:// URL of an echo endpoint")
    add_route_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--idle",
        metavar="S",
        type=_positive,
        default=None,
        help="also check that the tunnel survives S idle seconds (with and without pings)",
    )
    parser.add_argument(
        "--message-timeout",
        metavar="S",
        type=_positive,
        default=10.0,
        help="seconds each echo may take (default 10)",
    )
    parser.add_argument(
        "--no-direct-compare",
        action="store_true",
        help="for wss:// through a proxy, do not fetch the certificate directly to"
        " detect TLS interception",
    )
    parser.add_argument(
        "--connect-to",
        metavar="HOST:PORT",
        type=_host_port,
        default=None,
        help="connect here instead of the URL's host and port, keeping Host and SNI"
        " (direct routes only; like curl's --connect-to)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    return report_error(lambda: trio.run(partial(_check, args)))


async def _check(args: argparse.Namespace) -> int:
    options = CheckOptions(
        route_from_args(args),
        message_timeout=args.message_timeout,
        idle=args.idle,
        compare_direct=not args.no_direct_compare,
        connect_to=args.connect_to,
    )
    if args.json:
        report = await run_check(args.url, options)
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
        return report.exit_code

    # Lines appear as each step finishes: a silent proxy takes seconds.
    print(f"tunnelws check {args.url}", flush=True)
    counter = iter(range(1, 100))

    def show(step: StepResult) -> None:
        for line in render_step(step, next(counter)):
            print(line, flush=True)

    report = await run_check(args.url, options, on_step=show)
    print()
    for line in render_conclusion(report):
        print(line)
    sys.stdout.flush()
    return report.exit_code
