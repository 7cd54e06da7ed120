"""tunnelws: WebSocket through corporate proxies and firewalls."""

from __future__ import annotations

from ._auth import Credentials
from ._check import CheckOptions, CheckReport, run_check
from ._errors import (
    ConnectionClosed,
    ConnectionLostError,
    DirectConnectError,
    FallbackFailedError,
    HandshakeError,
    PhaseTimeoutError,
    ProxyAuthError,
    ProxyConfigError,
    ProxyConnectError,
    ProxyProtocolError,
    ProxyRefusedError,
    ProxyReplyError,
    TLSError,
    TunnelError,
)
from ._event_stream import EventStream, open_event_stream
from ._event_stream import ReadyState as EventSourceState
from ._forward import Forwarding, serve_forward, tunnel_stdio
from ._local_proxy import LocalProxy, LocalProxyOptions, serve_local_proxy
from ._proxy_url import ProxyURL
from ._route import AUTO, ProxyDecision, resolve_proxy
from ._route_options import RouteOptions, route_options
from ._sse import ServerSentEvent
from ._target import Target, parse_target
from ._transport import open_tunnel
from ._version import __version__
from ._websocket import ReadyState, WebSocketConnection, open_websocket

__all__ = [
    "AUTO",
    "CheckOptions",
    "CheckReport",
    "ConnectionClosed",
    "ConnectionLostError",
    "Credentials",
    "DirectConnectError",
    "EventSourceState",
    "EventStream",
    "FallbackFailedError",
    "Forwarding",
    "HandshakeError",
    "LocalProxy",
    "LocalProxyOptions",
    "PhaseTimeoutError",
    "ProxyAuthError",
    "ProxyConfigError",
    "ProxyConnectError",
    "ProxyDecision",
    "ProxyProtocolError",
    "ProxyRefusedError",
    "ProxyReplyError",
    "ProxyURL",
    "ReadyState",
    "RouteOptions",
    "ServerSentEvent",
    "TLSError",
    "Target",
    "TunnelError",
    "WebSocketConnection",
    "__version__",
    "open_event_stream",
    "open_tunnel",
    "open_websocket",
    "parse_target",
    "resolve_proxy",
    "route_options",
    "run_check",
    "serve_forward",
    "serve_local_proxy",
    "tunnel_stdio",
]
