"""``tunnelws demo``: the whole story on loopback, in seconds.

Starts the origin test server and the companion proxy in its strict-corporate
profile, runs ``tunnelws check`` over ws:// (refused, with the diagnosis) and
wss:// (passes), an echo session with ``tunnelws connect``, an echo through a
real third-party proxy (pproxy), and says where to open the browser page.
"""

from __future__ import annotations

import argparse
from functools import partial
from typing import Any

import trio

from . import requiring_extra

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the loopback demo: origin, strict corporate proxy, check, echo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--keep", action="store_true", help="leave the servers up until Ctrl-C")
    parser.set_defaults(handler=requiring_extra("demo", run))


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    return trio.run(partial(run_demo, keep=args.keep))
