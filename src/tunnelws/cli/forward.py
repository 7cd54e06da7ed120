"""``tunnelws forward [BIND:]PORT HOST:PORT``: listen locally and tunnel each
connection to HOST:PORT along the route.

BIND defaults to 127.0.0.1 (loopback: other machines cannot use the
forwarding); give 0.0.0.0 or :: to listen on every interface. Several
PORT HOST:PORT pairs may follow each other. Each line "listening on ..." on
stdout names a bound address (PORT 0 picks a free one). A connection whose
tunnel fails is closed and reported on stderr with its reason; the listener
keeps going. Ctrl-C or SIGTERM stops, exit 0.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from typing import Any

import trio

from .._address import parse_host_port
from .._errors import TunnelError
from .._forward import serve_forward
from .._route import resolve_proxy
from .._target import format_authority
from ._options import add_route_arguments, report_error, route_from_args
from ._relay import until_stop_signal

__all__ = ["register", "run"]

Pair = tuple[tuple[str, int], tuple[str, int]]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "forward",
        help="listen on a local port and tunnel each connection to HOST:PORT",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "pairs",
        nargs="+",
        metavar="[BIND:]PORT HOST:PORT",
        help="a local address and where its connections go (pairs may repeat)",
    )
    parser.add_argument(
        "--idle-timeout",
        metavar="S",
        type=float,
        default=None,
        help="close a connection after S seconds without data (default: never)",
    )
    add_route_arguments(parser)
    parser.set_defaults(handler=run)


def parse_pairs(words: list[str]) -> list[Pair]:
    if len(words) % 2:
        raise ValueError("expected pairs of [BIND:]PORT HOST:PORT")
    return [
        (
            parse_host_port(words[i], default_host="127.0.0.1", allow_port_zero=True),
            parse_host_port(words[i + 1]),
        )
        for i in range(0, len(words), 2)
    ]


def run(args: argparse.Namespace) -> int:
    return report_error(lambda: trio.run(partial(_session, args)))


def _report(description: str, exc: BaseException) -> None:
    reason = f"{exc.category}: {exc}" if isinstance(exc, TunnelError) else f"error: {exc}"
    print(f"tunnelws: forward: {description}: {reason}", file=sys.stderr, flush=True)


async def _session(args: argparse.Namespace) -> int:
    pairs = parse_pairs(args.pairs)
    route = route_from_args(args)
    for _, (host, port) in pairs:  # a broken proxy setting fails now, not per connection
        resolve_proxy(f"https://{format_authority(host, port)}/", route.proxy, env=route.env)
    async with trio.open_nursery() as nursery:
        for listen, destination in pairs:
            forwarding = await nursery.start(
                partial(
                    serve_forward,
                    listen,
                    destination,
                    route,
                    idle_timeout=args.idle_timeout,
                    on_error=_report,
                )
            )
            print(
                f"listening on {format_authority(*forwarding.address)} -> "
                f"{format_authority(*forwarding.destination)}",
                flush=True,
            )
        await until_stop_signal()
        nursery.cancel_scope.cancel()
    return 0
