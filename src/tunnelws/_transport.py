"""The trio side of the connection path: route, TCP, TLS to the proxy, CONNECT
tunnel, end-to-end TLS.

Protocol decisions live in the pure modules (``_route``, ``_connect``,
``_auth``); this module only moves bytes, applies the time budget and turns
OS and TLS failures into the error taxonomy.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import trio

from ._auth_thread import run_auth_step
from ._errors import (
    DirectConnectError,
    ProxyConfigError,
    ProxyConnectError,
    TLSError,
)
from ._failures import classify_connect_failure, read_tls_failure
from ._negotiation import (
    Action,
    ComputeAnswer,
    ConnectNegotiation,
    SendRequest,
    TunnelOpen,
)
from ._pac import default_resolver
from ._proxy_url import ProxyURL
from ._route import ProxyDecision, resolve_proxy
from ._route_options import RouteKeywords, RouteOptions, route_options
from ._socks import open_socks_tunnel
from ._target import Target, format_authority, normalize_host
from ._timeouts import PhaseClock
from ._trace import Trace
from ._trust import default_ssl_context

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "PrefixedStream",
    "connect_origin",
    "connect_proxy",
    "connect_tcp",
    "negotiate_tunnel",
    "open_along_route",
    "open_origin_stream",
    "open_route_stream",
    "open_tunnel",
    "open_via",
    "prefixed",
    "secure_origin",
    "start_tls",
]

_T = TypeVar("_T")

RECEIVE_SIZE = 65536


async def open_tunnel(
    host: str,
    port: int,
    *,
    scheme: str = "https",
    route: RouteOptions | None = None,
    **route_keywords: Unpack[RouteKeywords],
) -> trio.abc.Stream:
    """Open a byte stream to ``host:port`` for any TCP protocol.

    The route is chosen as for a ``scheme://host:port`` URL (so ``https``
    consults ``https_proxy`` and ``no_proxy``); through a proxy the stream is an
    HTTP CONNECT tunnel and the host name is sent to the proxy unresolved.
    ``route`` and the keywords are the :class:`~tunnelws.RouteOptions`. No TLS
    is started on the returned stream: wrap it yourself if needed.
    """
    target = Target(scheme, normalize_host(host), port, "/")
    options = route_options(route, **route_keywords)
    return await open_route_stream(target, options, PhaseClock(options.connect_timeout))


async def open_origin_stream(
    target: Target, route: RouteOptions | None = None, **route_keywords: Unpack[RouteKeywords]
) -> trio.abc.Stream:
    """A stream to ``target`` along its route, TLS done when it is secure."""
    options = route_options(route, **route_keywords)
    return await connect_origin(target, options, PhaseClock(options.connect_timeout))


async def connect_origin(
    target: Target, options: RouteOptions, clock: PhaseClock
) -> trio.abc.Stream:
    """A stream to the origin along its route, with TLS done for secure targets."""
    stream = await open_route_stream(target, options, clock)
    return await secure_origin(stream, target, options, clock)


async def secure_origin(
    stream: trio.abc.Stream, target: Target, options: RouteOptions, clock: PhaseClock
) -> trio.abc.Stream:
    """``stream`` itself for a plain target; else end-to-end TLS over it,
    verified with the route's ``ssl_context``."""
    if not target.secure:
        return stream
    context = options.ssl_context or default_ssl_context()
    return await start_tls(
        stream, context, target.host, peer="origin", clock=clock, trace=options.trace
    )


async def open_route_stream(
    target: Target, options: RouteOptions, clock: PhaseClock
) -> trio.abc.Stream:
    """A plain stream to ``target.host:port``: direct or through a tunnel."""
    stream, _ = await open_along_route(
        target, options, clock, lambda route: open_via(route, target, options, clock)
    )
    return stream


async def open_along_route(
    target: Target,
    options: RouteOptions,
    clock: PhaseClock,
    open_one: Callable[[ProxyURL | None], Awaitable[_T]],
) -> tuple[_T, ProxyURL | None]:
    """Decide the route for ``target`` and ``open_one`` it: the result and
    the route taken (None: DIRECT).

    With a PAC script, its routes are tried in order: a route whose proxy
    (or, for DIRECT, the origin) cannot be reached is recorded in the trace
    and the next one is tried; any other failure (auth, refusal, TLS) ends
    the attempt, as in browsers. ``open_one`` decides what opening a route
    means (a tunnel, or a connection to the proxy for absolute-form requests).
    """
    decision = resolve_proxy(target.url, options.proxy, env=options.env)
    trace = options.trace
    if trace:
        trace(f"* Route for {target.url}: {decision} ({decision.rule})")
    routes = await _candidate_routes(decision, target, clock, trace)
    failures: list[str] = []
    for number, route in enumerate(routes, start=1):
        try:
            return await open_one(route), route
        except (DirectConnectError, ProxyConnectError) as exc:
            if len(routes) == 1:
                raise
            label = "DIRECT" if route is None else route.redacted()
            failures.append(f"{label}: {exc}")
            if trace:
                trace(f"* Route {number}/{len(routes)} {label} failed: {exc}")
            if number == len(routes):
                summary = f"every route from {decision} failed: " + "; ".join(failures)
                if isinstance(exc, DirectConnectError):
                    raise DirectConnectError(summary) from exc
                raise ProxyConnectError(summary) from exc
    raise AssertionError("unreachable: routes is never empty")  # pragma: no cover


async def _candidate_routes(
    decision: ProxyDecision, target: Target, clock: PhaseClock, trace: Trace | None
) -> tuple[ProxyURL | None, ...]:
    if decision.pac is None:
        return (decision.proxy,)
    with clock.phase("route", f"evaluating the PAC script {decision.pac}"):
        answer = await default_resolver().find_proxy(decision.pac, target, log=_star(trace))
    if trace:
        cached = " (cached)" if answer.cached else ""
        trace(f"* PAC {answer.script_url} says for {answer.query_url}: {answer.text!r}{cached}")
        for note in answer.notes:
            trace(f"* {note}")
        order = ", ".join("DIRECT" if r is None else r.redacted() for r in answer.routes)
        trace(f"* Attempt order: {order or '(none)'}")
    if not answer.routes:
        raise ProxyConfigError(
            f"the PAC script {answer.script_url} gave no usable route for {answer.query_url}: "
            f"{answer.text!r}",
            source=decision.pac.source,
        )
    return answer.routes


def _star(trace: Trace | None) -> Trace | None:
    if trace is None:
        return None
    return lambda line: trace(f"* {line}")


async def open_via(
    route: ProxyURL | None, target: Target, options: RouteOptions, clock: PhaseClock
) -> trio.abc.Stream:
    """A plain stream to ``target`` over one route: TCP (None: DIRECT), a
    SOCKS5 tunnel or an HTTP CONNECT tunnel."""
    if route is None:
        return await connect_tcp(target.host, target.port, clock, options.trace, via_proxy=False)
    if route.scheme in ("socks5", "socks5h"):
        return await open_socks_tunnel(
            route, target, options.credentials_for(route), clock, options.trace
        )
    if route.scheme not in ("http", "https"):  # pragma: no cover - ProxyURL.parse rejects others
        raise ProxyConfigError(f"unsupported proxy scheme in {route}")
    return await _open_connect_tunnel(route, target, options, clock)


async def connect_tcp(
    host: str, port: int, clock: PhaseClock, trace: Trace | None, *, via_proxy: bool
) -> trio.SocketStream:
    authority = format_authority(host, port)
    what = "proxy" if via_proxy else "origin"
    if trace:
        trace(f"* Connecting to {what} {authority}")
    phase = "proxy-connect" if via_proxy else "connect"
    with clock.phase(phase, f"connecting to the {what} at {authority}"):
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            reason = classify_connect_failure(exc).reason
            if via_proxy:
                raise ProxyConnectError(f"cannot connect to proxy {authority}: {reason}") from exc
            raise DirectConnectError(f"cannot connect to {authority}: {reason}") from exc
    if trace:
        trace(f"* Connected to {what} {authority}")
    return stream


async def start_tls(
    stream: trio.abc.Stream,
    context: ssl.SSLContext,
    server_hostname: str,
    *,
    peer: str,
    clock: PhaseClock,
    trace: Trace | None,
) -> trio.SSLStream[trio.abc.Stream]:
    """TLS handshake with ``peer`` ("proxy" or "origin"), verification as the
    context says (on by default); failures become :class:`TLSError`."""
    # https_compatible: peers (and proxies in between) often close without a
    # close_notify; the WebSocket close handshake already marks a clean end.
    tls = trio.SSLStream(stream, context, server_hostname=server_hostname, https_compatible=True)
    phase = "proxy-tls" if peer == "proxy" else "tls"
    try:
        with clock.phase(phase, f"in the TLS handshake with the {peer} {server_hostname}"):
            await tls.do_handshake()
    except trio.BrokenResourceError as exc:
        await trio.aclose_forcefully(tls)
        message = read_tls_failure(exc).describe(peer, server_hostname)
        raise TLSError(message, peer=peer) from exc
    except BaseException:
        await trio.aclose_forcefully(tls)
        raise
    if trace:
        trace(f"* TLS with {peer} {server_hostname}: {tls.version()}, {_describe_peer_cert(tls)}")
    return tls


def _describe_peer_cert(tls: trio.SSLStream[trio.abc.Stream]) -> str:
    cert = tls.getpeercert()
    if not cert:
        return "certificate not verified"

    def name(field_name: str) -> str:
        rdns = cert.get(field_name, ())
        return ", ".join(f"{k}={v}" for rdn in rdns for k, v in rdn)

    return f"certificate subject {name('subject')}; issuer {name('issuer')}"


async def _open_connect_tunnel(
    proxy: ProxyURL, target: Target, options: RouteOptions, clock: PhaseClock
) -> trio.abc.Stream:
    negotiation = ConnectNegotiation(
        target.host,
        target.port,
        credentials=options.credentials_for(proxy),
        proxy_host=proxy.host,
        headers=options.proxy_headers,
        schemes=options.proxy_auth_schemes,
        trace=options.trace,
    )
    stream = await connect_proxy(proxy, options, clock)
    return await negotiate_tunnel(
        negotiation, stream, lambda: connect_proxy(proxy, options, clock), clock
    )


async def negotiate_tunnel(
    negotiation: ConnectNegotiation,
    stream: trio.abc.Stream,
    reconnect: Callable[[], Awaitable[trio.abc.Stream]],
    clock: PhaseClock,
) -> trio.abc.Stream:
    """Drive ``negotiation`` over ``stream`` (and new connections from
    ``reconnect`` when the proxy closes one): the tunnel, or its typed error.

    Only moves bytes; every decision is the negotiation's. The stream is
    closed on failure.
    """
    action: Action = negotiation.start()
    doing = f"waiting for the proxy's reply to CONNECT {negotiation.authority}"
    try:
        while True:
            if isinstance(action, TunnelOpen):
                return prefixed(stream, action.leftover)
            if isinstance(action, ComputeAnswer):
                with clock.phase("tunnel", _ANSWERING):
                    action = negotiation.answer(await run_auth_step(action.compute))
                continue
            if not isinstance(action, SendRequest):
                raise action.error
            if action.reconnect:
                await stream.aclose()
                stream = await reconnect()
            with clock.phase("tunnel", doing):
                action = await _exchange(negotiation, stream, action.data)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise


_ANSWERING = (
    "computing the answer to the proxy's NTLM/Negotiate challenge "
    "(GSSAPI, which may be waiting for the Kerberos KDC)"
)


async def _exchange(
    negotiation: ConnectNegotiation, stream: trio.abc.Stream, request: bytes
) -> Action:
    """Send one CONNECT and feed the reply until the negotiation decides."""
    try:
        await stream.send_all(request)
        while True:
            data = await stream.receive_some(RECEIVE_SIZE)
            action = negotiation.receive_data(bytes(data))
            if action is not None:
                return action
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        return negotiation.connection_broken(str(exc.__cause__ or exc))


async def connect_proxy(
    proxy: ProxyURL, options: RouteOptions, clock: PhaseClock, *, quiet: bool = False
) -> trio.abc.Stream:
    """TCP to the proxy, plus TLS for an ``https://`` proxy."""
    trace = None if quiet else options.trace
    stream: trio.abc.Stream = await connect_tcp(
        proxy.host, proxy.port, clock, trace, via_proxy=True
    )
    if proxy.scheme == "https":
        context = options.proxy_ssl_context or default_ssl_context()
        stream = await start_tls(
            stream, context, proxy.host, peer="proxy", clock=clock, trace=trace
        )
    return stream


def prefixed(inner: trio.abc.Stream, prefix: bytes) -> trio.abc.Stream:
    """``inner`` with ``prefix`` in front; ``inner`` itself when there is
    none, so the usual tunnel pays for no extra layer on every read."""
    return PrefixedStream(inner, prefix) if prefix else inner


class PrefixedStream(trio.abc.Stream):
    """A stream that first returns bytes already read from it.

    Proxies may send the first tunnel bytes in the same segment as their
    reply (and clients theirs right behind a request head); those belong to
    the stream and must not be lost.
    """

    def __init__(self, inner: trio.abc.Stream, prefix: bytes) -> None:
        self.inner = inner
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            size = len(self._prefix) if max_bytes is None else max_bytes
            chunk, self._prefix = self._prefix[:size], self._prefix[size:]
            await trio.lowlevel.checkpoint()
            return chunk
        return bytes(await self.inner.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def send_eof(self) -> None:
        """Half-close, when the stream underneath can (TCP yes, TLS no)."""
        if not isinstance(self.inner, trio.abc.HalfCloseableStream):
            raise trio.ClosedResourceError("the stream underneath cannot half-close")
        await self.inner.send_eof()
