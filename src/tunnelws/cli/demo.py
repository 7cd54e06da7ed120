"""``tunnelws demo``: the whole path on loopback, in seconds."""

from __future__ import annotations

import argparse
from functools import partial
from typing import Any

import trio


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the loopback demo: origin server, real proxy with auth, ws:// and wss:// echo",
        description=__doc__,
    )
    parser.add_argument("--keep", action="store_true", help="leave the servers up until Ctrl-C")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tunnelws_testnet.demo import run_demo

    return trio.run(partial(run_demo, keep=args.keep))
