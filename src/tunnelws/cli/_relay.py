"""What ``tunnel``, ``forward`` and ``local-proxy`` share: the route options
object built from the common route arguments, and waiting for a stop signal."""

from __future__ import annotations

import argparse
import signal

import trio

from .._transport import RouteOptions, scheme_names
from ._options import route_kwargs

__all__ = ["route_options", "until_stop_signal"]


def route_options(args: argparse.Namespace) -> RouteOptions:
    """The :class:`RouteOptions` the route arguments (``add_route_arguments``) describe."""
    kwargs = route_kwargs(args)
    return RouteOptions(
        proxy=kwargs["proxy"],
        proxy_auth=kwargs["proxy_auth"],
        proxy_headers=tuple(kwargs["proxy_headers"]),
        ssl_context=kwargs["ssl_context"],
        proxy_ssl_context=kwargs["proxy_ssl_context"],
        proxy_auth_schemes=scheme_names(kwargs["proxy_auth_schemes"]),
        connect_timeout=kwargs["connect_timeout"],
        trace=kwargs["trace"],
    )


async def until_stop_signal() -> None:
    """Return at the first SIGINT or SIGTERM (servers then stop cleanly, exit 0)."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return
