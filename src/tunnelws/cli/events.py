"""``tunnelws events URL``: print a server-sent events stream, one event a line.

Each event is printed as ``TYPE: DATA`` (line breaks inside DATA shown as
``\\n``, backslashes as ``\\\\``), or with --json as one JSON object
``{"type", "data", "id"}`` per line. Dropped connections are re-established
with Last-Event-ID, as a browser's EventSource does. Exits 0 after --count
events or when the stream ends for good (204, or no reconnection left).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from functools import partial
from typing import Any, TextIO

import trio

from .._event_stream import EventStream, open_event_stream
from .._sse import ServerSentEvent
from ._options import (
    add_header_argument,
    add_route_arguments,
    report_error,
    route_from_args,
)

__all__ = ["format_event", "register", "run"]


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "events",
        help="print a server-sent events (EventSource) stream, one event per line",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url", help="http:// or https:// URL of the event stream")
    add_route_arguments(parser)
    add_header_argument(parser, request="GET request")
    parser.add_argument(
        "--json", action="store_true", help='print {"type", "data", "id"} JSON lines'
    )
    parser.add_argument("--count", metavar="N", type=_positive_int, help="exit 0 after N events")
    parser.add_argument(
        "--last-event-id", metavar="ID", help="resume after this event ID (sent as Last-Event-ID)"
    )
    parser.add_argument(
        "--max-reconnects",
        metavar="N",
        type=_non_negative_int,
        help="reconnect at most N times (default: no limit; 0: never)",
    )
    parser.add_argument(
        "--read-timeout",
        metavar="S",
        type=_positive_float,
        help="treat S seconds without a byte as a dropped connection",
    )
    parser.set_defaults(handler=run)


def format_event(event: ServerSentEvent, *, as_json: bool) -> str:
    """One output line for ``event``."""
    if as_json:
        return json.dumps({"type": event.type, "data": event.data, "id": event.id})
    data = event.data.replace("\\", "\\\\").replace("\n", "\\n")
    return f"{event.type}: {data}"


def run(args: argparse.Namespace) -> int:
    return report_error(lambda: trio.run(partial(_session, args)))


async def _session(args: argparse.Namespace) -> int:
    async with open_event_stream(
        args.url,
        route=route_from_args(args),
        headers=args.header,
        last_event_id=args.last_event_id,
        max_reconnects=args.max_reconnects,
        read_timeout=args.read_timeout,
    ) as events:
        await _print_events(events, sys.stdout, count=args.count, as_json=args.json)
    return 0


async def _print_events(
    events: EventStream, out: TextIO, *, count: int | None, as_json: bool
) -> None:
    printed = 0
    async for event in events:
        try:
            out.write(format_event(event, as_json=as_json) + "\n")
            # Flushed per event: the output is usually a pipe to another tool.
            out.flush()
        except BrokenPipeError:
            # The reader went away (``| head``): a normal way to stop. Point
            # stdout at /dev/null so the interpreter's final flush is quiet.
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
            return
        printed += 1
        if count is not None and printed >= count:
            return
