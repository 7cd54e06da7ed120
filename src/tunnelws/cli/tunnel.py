"""``tunnelws tunnel HOST:PORT``: standard input and output joined to a
tunnel to HOST:PORT along the route, byte for byte.

For ssh: ``ssh -o ProxyCommand='tunnelws tunnel %h:%p' host``. At the end of
standard input the tunnel is half-closed; when the far side closes, the
command exits 0. With --tls, TLS to HOST runs inside the tunnel (verified
against the OS trust store plus --cacert, SNI = HOST), so stdin and stdout
carry the plaintext. Failures exit with the error taxonomy's codes (see
docs/errors.md).
"""

from __future__ import annotations

import argparse
from functools import partial
from typing import Any

import trio

from .._address import parse_host_port
from .._forward import tunnel_stdio
from ._options import add_route_arguments, report_error, route_from_args

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "tunnel",
        help="join stdin/stdout to a tunnel to HOST:PORT (ssh ProxyCommand and the like)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("destination", metavar="HOST:PORT", help="where the tunnel goes")
    parser.add_argument(
        "--tls",
        action="store_true",
        help="run TLS to HOST inside the tunnel (verified, SNI = HOST)",
    )
    add_route_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    return report_error(lambda: trio.run(partial(_session, args)))


async def _session(args: argparse.Namespace) -> int:
    host, port = parse_host_port(args.destination)
    await tunnel_stdio(host, port, route_from_args(args), tls=args.tls)
    return 0
