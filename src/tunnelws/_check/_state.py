"""What the walk carries from step to step, and how it opens more
connections along the same route (for the probes that need a second one)."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, replace

import trio

from .._auth import Credentials
from .._proxy_url import ProxyURL
from .._route import AUTO, ProxySetting
from .._target import Target
from .._timeouts import PhaseClock
from .._trace import Trace
from .._transport import (
    RouteOptions,
    _connect_tcp,
    open_route_stream,
    start_tls,
)
from .._trust import default_ssl_context
from ._channel import ChannelLost, MessageChannel
from ._report import Diagnosis, StepStatus
from ._upgrade import (
    build_upgrade_request,
    new_key,
)
from ._wire import read_head

__all__ = ["CheckOptions", "Outcome", "StepFailed", "Walk"]

#: What a step returns: ``(status, summary)`` or ``(status, summary, diagnosis)``;
#: None for a step that does not apply at all (``idle`` without ``--idle``).
Outcome = tuple[StepStatus, str] | tuple[StepStatus, str, Diagnosis | None] | None


@dataclass(frozen=True)
class CheckOptions:
    """How ``check`` reaches the origin; the same meaning as for
    :func:`~tunnelws.open_websocket`, plus:

    ``idle``: also check that the tunnel survives this many idle seconds.
    ``message_timeout``: seconds each echo may take.
    ``compare_direct``: for ``wss://`` through a proxy, also fetch the
    origin's certificate directly (bounded to 2 s) to tell interception.
    ``connect_to``: reach the origin at this ``(host, port)`` instead of the
    URL's, keeping the URL's ``Host`` and SNI (like curl's ``--connect-to``;
    direct routes only).
    ``env``: the environment for the route (default :data:`os.environ`).
    """

    proxy: ProxySetting = AUTO
    proxy_auth: tuple[str, str] | Credentials | None = None
    proxy_headers: tuple[tuple[str, str], ...] = ()
    ssl_context: ssl.SSLContext | None = None
    proxy_ssl_context: ssl.SSLContext | None = None
    connect_timeout: float = 10.0
    message_timeout: float = 10.0
    idle: float | None = None
    compare_direct: bool = True
    connect_to: tuple[str, int] | None = None
    env: Mapping[str, str] | None = None
    trace: Trace | None = None


class StepFailed(Exception):
    """A step ends with this diagnosis (and these details)."""

    def __init__(self, summary: str, diagnosis: Diagnosis) -> None:
        super().__init__(summary)
        self.summary = summary
        self.diagnosis = diagnosis


class Walk:
    """The state of one check: the route chosen, the stream built so far,
    and the details the current step has noted."""

    def __init__(self, target: Target, options: CheckOptions) -> None:
        self.target = target
        self.options = options
        self.trace = options.trace
        self.proxy: ProxyURL | None = None
        self.stream: trio.abc.Stream | None = None
        self.channel: MessageChannel | None = None
        self.leftover = b""
        self.proxy_issuer: str | None = None
        self.details: list[str] = []

    def route_options(self, proxy: ProxyURL | None) -> RouteOptions:
        return RouteOptions(
            proxy=proxy,
            proxy_auth=self.options.proxy_auth,
            proxy_headers=self.options.proxy_headers,
            ssl_context=self.options.ssl_context,
            proxy_ssl_context=self.options.proxy_ssl_context,
            connect_timeout=self.options.connect_timeout,
            trace=self.trace,
        )

    def origin_address(self) -> tuple[str, int]:
        return self.options.connect_to or (self.target.host, self.target.port)

    async def connect_proxy(self) -> trio.abc.Stream:
        """A fresh connection to the proxy (TCP, plus TLS for https:// proxies)."""
        assert self.proxy is not None
        clock = PhaseClock(self.options.connect_timeout)
        stream: trio.abc.Stream = await _connect_tcp(
            self.proxy.host, self.proxy.port, clock, None, via_proxy=True
        )
        if self.proxy.scheme == "https":
            context = self.options.proxy_ssl_context or default_ssl_context()
            stream = await start_tls(
                stream, context, self.proxy.host, peer="proxy", clock=clock, trace=None
            )
        return stream

    async def open_plain_path(self) -> trio.abc.Stream:
        """A new stream to the origin along the same route, before TLS."""
        clock = PhaseClock(self.options.connect_timeout)
        if self.proxy is None:
            host, port = self.origin_address()
            return await _connect_tcp(host, port, clock, None, via_proxy=False)
        quiet = replace(self.route_options(self.proxy), trace=None)  # -v shows the main path only
        return await open_route_stream(self.target, quiet, clock)

    async def open_origin(self) -> trio.abc.Stream:
        """A new stream to the origin along the same route, TLS done for wss://."""
        stream = await self.open_plain_path()
        if not self.target.secure:
            return stream
        context = self.options.ssl_context or default_ssl_context()
        return await start_tls(
            stream,
            context,
            self.target.host,
            peer="origin",
            clock=PhaseClock(self.options.connect_timeout),
            trace=None,
        )

    async def open_websocket(self) -> MessageChannel:
        """A second WebSocket to the URL along the same route."""
        stream = await self.open_origin()
        key = new_key()
        head, leftover, _, _ = await read_head(
            stream, build_upgrade_request(self.target, key), self.options.connect_timeout
        )
        if head is None or head.status != 101:
            await trio.aclose_forcefully(stream)
            raise ChannelLost("closed", detail="upgrade failed")
        return MessageChannel(stream, leftover)
