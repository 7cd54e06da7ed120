"""``tunnelws connect URL``: a WebSocket client for scripts and terminals.

Each stdin line is sent as a text message; each message received is printed
on its own line. At the end of stdin the closing handshake starts, and what
arrives until it completes is still printed. Where WebSocket cannot pass but
plain HTTP can, the HTTP fallback carries the messages (--fallback).
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from typing import Any

import trio

from .._errors import ConnectionClosed, ConnectionLostError
from .._websocket import DEFAULT_PING_INTERVAL, WebSocketConnection, open_websocket
from ._options import (
    add_header_argument,
    add_route_arguments,
    report_error,
    route_from_args,
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "connect",
        help="send stdin lines as WebSocket messages and print what comes back",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url", help="ws:// or wss:// URL")
    add_route_arguments(parser)
    add_header_argument(parser, request="WebSocket upgrade request")
    parser.add_argument(
        "--subprotocol",
        metavar="P",
        action="append",
        default=[],
        help="offer this subprotocol (repeatable, in order of preference)",
    )
    parser.add_argument(
        "--ping-interval",
        metavar="S",
        type=_seconds_or_off,
        default=DEFAULT_PING_INTERVAL,
        help="send a keepalive ping every S seconds, so proxies that drop idle tunnels "
        f"keep this one (default {DEFAULT_PING_INTERVAL:g}; 0: no pings)",
    )
    parser.add_argument(
        "--fallback",
        choices=("auto", "never", "only"),
        default="auto",
        help="the HTTP fallback: when WebSocket cannot pass (auto, the default), not at all"
        " (never), or at once (only)",
    )
    parser.set_defaults(handler=run)


def _seconds_or_off(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not seconds >= 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 (off) or a positive number: {text!r}")
    return seconds


def run(args: argparse.Namespace) -> int:
    return report_error(lambda: trio.run(partial(_session, args)))


async def _session(args: argparse.Namespace) -> int:
    route = route_from_args(args)
    trace = route.trace
    async with open_websocket(
        args.url,
        route=route,
        subprotocols=args.subprotocol,
        extra_headers=args.header,
        ping_interval=args.ping_interval or None,  # 0: off
        fallback=args.fallback,
    ) as ws:
        if trace:
            via = ""
            if ws.transport == "http-fallback":
                via = f" through the HTTP fallback ({ws.fallback_reason})"
            trace(
                f"* WebSocket open{via}: {ws.url}"
                + (f", subprotocol {ws.subprotocol}" if ws.subprotocol else "")
            )
        lost: ConnectionLostError | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_send_stdin_lines, ws)
            try:
                await _print_messages(ws)
            except ConnectionLostError as exc:
                lost = exc  # re-raised below, outside the nursery: exit 12
            nursery.cancel_scope.cancel()
        if lost is not None:
            raise lost
        if trace:
            trace(f"* Closed: {ws.close_code} {ws.close_reason}".rstrip())
    return 0


async def _send_stdin_lines(ws: WebSocketConnection) -> None:
    # A thread per line works the same for terminals, pipes and files;
    # abandoning it on cancel is fine for a process about to exit.
    readline = sys.stdin.readline
    while True:
        line = await trio.to_thread.run_sync(readline, abandon_on_cancel=True)
        if not line:
            break
        try:
            await ws.send(line.rstrip("\r\n"))
        except ConnectionClosed:
            return
    await ws.close()


async def _print_messages(ws: WebSocketConnection) -> None:
    """Print until a normal close; ConnectionLostError propagates (exit 12)."""
    out = sys.stdout
    async for message in ws:
        if isinstance(message, str):
            out.write(message + "\n")
        else:
            out.flush()
            out.buffer.write(message + b"\n")
        out.flush()
