"""``tunnelws proxy`` options for the behaviours that make the HTTP fallback
necessary or hard (refusing CONNECT, buffering, time and size limits,
responses reset mid-body).

Kept apart so the ``proxy`` command adds them with two calls::

    add_arguments(parser)                     # in register()
    changes.update(config_changes(args))      # in build_config()
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_arguments", "config_changes"]


def _ports(text: str) -> frozenset[int]:
    try:
        ports = frozenset(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ports, got {text!r}") from None
    if not ports or any(not 0 < p < 65536 for p in ports):
        raise argparse.ArgumentTypeError(f"invalid port list {text!r}")
    return ports


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("a fraction between 0 and 1")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("behaviours that block WebSocket but let HTTP pass")
    add = group.add_argument
    add("--refuse-connect", action=argparse.BooleanOptionalAction, default=None,
        help="answer every CONNECT with 405 (a forward-only proxy)")
    add("--connect-ports", type=_ports, metavar="P,P",
        help="ports CONNECT alone may reach (squid's SSL_ports), e.g. 443")
    add("--buffer-responses", type=int, metavar="BYTES",
        help="hold each forwarded response until BYTES or its end (a scanning proxy)")
    add("--request-time-limit", type=float, metavar="S",
        help="cut forwarded requests S seconds after they started")
    add("--max-request-body", type=int, metavar="BYTES",
        help="forwarded requests with a larger body get 413")
    add("--reset-responses", type=_fraction, metavar="FRACTION",
        help="reset this fraction of forwarded responses mid-body (seeded by --seed)")


def config_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The ProxyConfig fields the user gave explicitly."""
    names = ("refuse_connect", "connect_ports", "buffer_responses", "request_time_limit",
             "max_request_body", "reset_responses")
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}
