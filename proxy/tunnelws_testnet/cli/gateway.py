"""``tunnelws gateway``: front a WebSocket server with the HTTP fallback.

Native WebSocket upgrades are relayed to ``--backend`` as they are; each
fallback session becomes one WebSocket to it; ``/tunnelws.js`` is the
browser shim. Serves until Ctrl-C or SIGTERM, which exit 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace

import trio

from tunnelws.fallback import SessionLimits
from tunnelws_testnet.fallback import FallbackConfig
from tunnelws_testnet.gateway import GatewayConfig, RunningGateway, serve_gateway

__all__ = ["main", "register", "run"]

EXIT_OK = 0
EXIT_CANNOT_SERVE = 1
EXIT_USAGE = 2


def _host_port(text: str) -> tuple[str, int]:
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


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
    add_arguments(parser)
    parser.set_defaults(handler=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--listen", type=_host_port, metavar="HOST:PORT", default=("127.0.0.1", 8080),
        help="where to listen (default 127.0.0.1:8080; port 0 picks a free one)")
    add("--backend", required=True, metavar="ws://HOST:PORT[/path]",
        help="the WebSocket server; its path, if any, prefixes every client's path")
    add("--max-sessions", type=int, metavar="N", default=FallbackConfig.max_sessions,
        help=f"fallback sessions at once (default {FallbackConfig.max_sessions}; more: 503)")
    add("--expires", type=_positive, metavar="S", default=SessionLimits.expires,
        help=f"a fallback session with no request for S seconds ends "
             f"(default {SessionLimits.expires:g})")
    add("--route", metavar="LABEL",
        help="letters and digits starting every fallback session id (LABEL-...), for a load "
             "balancer that routes on it (several gateways; see docs/gateway.md)")
    add("--connect-timeout", type=_positive, metavar="S", default=GatewayConfig.connect_timeout,
        help="seconds to reach the backend and finish its handshake (default 10)")


def build_config(args: argparse.Namespace) -> GatewayConfig:
    limits = replace(SessionLimits(), expires=args.expires)
    if args.max_sessions < 1:
        raise ValueError("--max-sessions must be positive")
    return GatewayConfig(
        backend=args.backend,
        host=args.listen[0],
        port=args.listen[1],
        fallback=FallbackConfig(limits=limits, max_sessions=args.max_sessions, route=args.route),
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
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            gateway: RunningGateway = await nursery.start(serve_gateway, config)
            print(f"tunnelws gateway listening on {gateway.http_url()} "
                  f"(backend {config.backend})", flush=True)
            print(f"  browser shim {gateway.http_url('/tunnelws.js')}", flush=True)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    """Run as ``python -m tunnelws_testnet.cli.gateway`` (until it is wired
    into ``tunnelws``)."""
    parser = argparse.ArgumentParser(prog="tunnelws gateway")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
