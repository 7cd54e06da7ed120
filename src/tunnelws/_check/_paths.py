"""More connections along the route the walk chose, for the probes that need
a second one (port-443 probe, certificate fetch, ``/info``, idle with pings).
Built from the transport's public pieces, never a copy of them."""

from __future__ import annotations

import trio

from .._timeouts import PhaseClock
from .._transport import connect_proxy, connect_tcp, open_route_stream, start_tls
from .._trust import default_ssl_context
from ._channel import ChannelLost, MessageChannel
from ._state import Walk
from ._upgrade import build_upgrade_request, new_key
from ._wire import read_head

__all__ = ["open_origin", "open_plain_path", "open_proxy", "open_second_websocket"]


async def open_proxy(walk: Walk) -> trio.abc.Stream:
    """A fresh connection to the proxy (TCP, plus TLS for https:// proxies)."""
    assert walk.proxy is not None
    return await connect_proxy(walk.proxy, walk.route, PhaseClock(walk.timeout), quiet=True)


async def open_plain_path(walk: Walk) -> trio.abc.Stream:
    """A new stream to the origin along the same route, before TLS."""
    clock = PhaseClock(walk.timeout)
    if walk.proxy is None:
        host, port = walk.origin_address()
        return await connect_tcp(host, port, clock, None, via_proxy=False)
    return await open_route_stream(walk.target, walk.chosen_route(quiet=True), clock)


async def open_origin(walk: Walk) -> trio.abc.Stream:
    """A new stream to the origin along the same route, TLS done for wss://."""
    stream = await open_plain_path(walk)
    if not walk.target.secure:
        return stream
    return await start_tls(
        stream,
        walk.route.ssl_context or default_ssl_context(),
        walk.target.host,
        peer="origin",
        clock=PhaseClock(walk.timeout),
        trace=None,
    )


async def open_second_websocket(walk: Walk) -> MessageChannel:
    """A second WebSocket to the URL along the same route."""
    stream = await open_origin(walk)
    request = build_upgrade_request(walk.target, new_key())
    head, leftover, _, _ = await read_head(stream, request, walk.timeout)
    if head is None or head.status != 101:
        await trio.aclose_forcefully(stream)
        raise ChannelLost("closed", detail="upgrade failed")
    return MessageChannel(stream, leftover)
