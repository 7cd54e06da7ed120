"""``tunnelws gateway``: front a WebSocket server with the HTTP fallback.

Native WebSocket upgrades are relayed to ``--backend`` as they are; each
fallback session becomes one WebSocket to it; ``/tunnelws.js`` is the
browser shim. Serves until Ctrl-C or SIGTERM, which exit 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import TYPE_CHECKING

import trio

from tunnelws.fallback import SessionLimits

from . import EXIT_USAGE, requiring_extra
from ._arguments import host_port, positive

if TYPE_CHECKING:
    from ..gateway import GatewayConfig

__all__ = ["build_config", "register", "run"]

EXIT_OK = 0
EXIT_CANNOT_SERVE = 1
DEFAULT_MAX_SESSIONS = 1000
DEFAULT_CONNECT_TIMEOUT = 10.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "gateway",
        help="front a WebSocket server: native relay, HTTP fallback, browser shim",
        description=(
            "Listen on --listen and front the WebSocket server at --backend: native "
            "WebSocket upgrades are relayed as they are, each HTTP fallback session becomes "
            "one WebSocket to the backend, and /tunnelws.js serves the browser shim."
        ),
    )
    add = parser.add_argument
    add("--listen", type=host_port, metavar="HOST:PORT", default=("127.0.0.1", 8080),
        help="where to listen (default 127.0.0.1:8080; port 0 picks a free one)")
    add("--backend", required=True, metavar="ws://HOST:PORT[/path]",
        help="the WebSocket server; its path, if any, prefixes every client's path")
    add("--max-sessions", type=int, metavar="N", default=DEFAULT_MAX_SESSIONS,
        help=f"fallback sessions at once (default {DEFAULT_MAX_SESSIONS}; more: 503)")
    add("--expires", type=positive, metavar="S", default=SessionLimits.expires,
        help="a fallback session with no request for S seconds ends "
             f"(default {SessionLimits.expires:g})")
    add("--route", metavar="LABEL",
        help="letters and digits starting every fallback session id (LABEL-...), for a load "
             "balancer that routes on it (several gateways; see docs/gateway.md)")
    add("--connect-timeout", type=positive, metavar="S", default=DEFAULT_CONNECT_TIMEOUT,
        help=f"seconds to reach the backend and finish its handshake "
             f"(default {DEFAULT_CONNECT_TIMEOUT:g})")
    parser.set_defaults(handler=requiring_extra("gateway", run))


def build_config(args: argparse.Namespace) -> GatewayConfig:
    from ..fallback import FallbackConfig
    from ..gateway import GatewayConfig

    if args.max_sessions < 1:
        raise ValueError("--max-sessions must be positive")
    return GatewayConfig(
        backend=args.backend,
        host=args.listen[0],
        port=args.listen[1],
        fallback=FallbackConfig(
            limits=SessionLimits(expires=args.expires),
            max_sessions=args.max_sessions,
            route=args.route,
        ),
        connect_timeout=args.connect_timeout,
    )


def run(args: argparse.Namespace) -> int:
    try:
        config = build_config(args)
    except ValueError as exc:
        print(f"tunnelws gateway: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        trio.run(_serve, config)
    except OSError as exc:
        print(f"tunnelws gateway: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_CANNOT_SERVE
    return EXIT_OK


async def _serve(config: GatewayConfig) -> None:
    from ..gateway import serve_gateway

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            gateway = await nursery.start(serve_gateway, config)
            print(f"tunnelws gateway listening on {gateway.http_url()} "
                  f"(backend {config.backend})", flush=True)
            print(f"  browser shim {gateway.http_url('/tunnelws.js')}", flush=True)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()
