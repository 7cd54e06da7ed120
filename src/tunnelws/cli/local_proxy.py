"""``tunnelws local-proxy``: an HTTP proxy on this machine that needs nothing
from its clients and reaches the world the way tunnelws does.

Point any program at it (http_proxy=https_proxy=http://127.0.0.1:3128): it
takes CONNECT and absolute-form requests and sends them along the route
(--proxy, or the proxy variables, or PAC with failover; DIRECT for no_proxy
matches), authenticating upstream with any scheme the proxy asks for
(--proxy-user USER keeps the password out of ps: it is read from
$TUNNELWS_PROXY_PASSWORD or asked for). Only clients from --allow (loopback
by default) are served. "listening on URL" goes to stdout once it listens;
Ctrl-C or SIGTERM stops accepting and lets open connections finish for
--shutdown-grace seconds, exit 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import trio

from .._address import parse_host_port
from .._local_proxy import (
    DEFAULT_LISTEN,
    LOOPBACK_NETWORKS,
    LocalProxy,
    LocalProxyOptions,
    serve_local_proxy,
)
from .._route import is_loopback
from ._options import add_route_arguments, report_error, route_from_args
from ._relay import until_stop_signal

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "local-proxy",
        help="run a local HTTP proxy that gives any program tunnelws's route",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--listen",
        metavar="HOST:PORT",
        default=f"{DEFAULT_LISTEN[0]}:{DEFAULT_LISTEN[1]}",
        help="where to listen (default %(default)s; port 0 picks a free one)",
    )
    parser.add_argument(
        "--allow",
        metavar="CIDR",
        action="append",
        default=[],
        help="accept clients from this network (repeatable; default loopback only)",
    )
    parser.add_argument(
        "--log", metavar="FILE", help="append one JSON line per connection ('-' = stdout)"
    )
    parser.add_argument(
        "--idle-timeout",
        metavar="S",
        type=float,
        default=300.0,
        help="close connections idle or stuck for S seconds (default 300)",
    )
    parser.add_argument(
        "--head-timeout",
        metavar="S",
        type=float,
        default=30.0,
        help="seconds for a client to send its request (default 30)",
    )
    parser.add_argument(
        "--max-connections",
        metavar="N",
        type=int,
        default=1024,
        help="connections served at once; more wait (default 1024)",
    )
    parser.add_argument(
        "--shutdown-grace",
        metavar="S",
        type=float,
        default=5.0,
        help="on Ctrl-C/SIGTERM, seconds open connections may still run (default 5)",
    )
    add_route_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    return report_error(partial(_run, args))


def _run(args: argparse.Namespace) -> int:
    if args.log is None or args.log == "-":
        return trio.run(_session, args, None if args.log is None else sys.stdout)
    with Path(args.log).open("a", encoding="utf-8") as log_file:
        return trio.run(_session, args, log_file)


def _json_lines(out: TextIO) -> Callable[[dict[str, Any]], None]:
    def write(record: dict[str, Any]) -> None:
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        out.flush()

    return write


async def _session(args: argparse.Namespace, log_file: TextIO | None) -> int:
    listen = parse_host_port(args.listen, allow_port_zero=True)
    options = LocalProxyOptions(
        listen=listen,
        route=route_from_args(args),
        allow=tuple(args.allow) or LOOPBACK_NETWORKS,
        head_timeout=args.head_timeout,
        idle_timeout=args.idle_timeout,
        max_connections=args.max_connections,
        log=None if log_file is None else _json_lines(log_file),
    )
    if not args.allow and not is_loopback(listen[0]):
        print(
            "tunnelws: note: only loopback clients are served; add --allow CIDR for others",
            file=sys.stderr,
        )
    async with trio.open_nursery() as nursery:
        proxy: LocalProxy = await nursery.start(serve_local_proxy, options)
        print(f"listening on {proxy.url}", flush=True)
        await until_stop_signal()
        await proxy.shutdown(args.shutdown_grace)
    return 0
