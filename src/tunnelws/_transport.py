"""The trio side of the connection path: route, TCP, TLS to the proxy, CONNECT
tunnel, end-to-end TLS.

Protocol decisions live in the pure modules (``_route``, ``_connect``,
``_auth``); this module only moves bytes, applies the time budget and turns
OS and TLS failures into the error taxonomy.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from ._auth import Credentials, ProxyAuthenticator
from ._connect import ConnectReplyParser, ProxyReply, build_connect_request
from ._errors import (
    DirectConnectError,
    ProxyConfigError,
    ProxyConnectError,
    ProxyProtocolError,
    ProxyRefusedError,
    TLSError,
)
from ._pac import default_resolver
from ._proxy_url import ProxyURL
from ._route import AUTO, ProxyDecision, ProxySetting, resolve_proxy
from ._socks import open_socks_tunnel
from ._target import Target, format_authority, normalize_host
from ._timeouts import PhaseClock
from ._trace import Trace, trace_head
from ._trust import default_ssl_context
from ._version import USER_AGENT

__all__ = [
    "PrefixedStream",
    "ProxyAuth",
    "RouteOptions",
    "connect_origin",
    "open_origin_stream",
    "open_route_stream",
    "open_tunnel",
    "prefixed",
    "start_tls",
]

ProxyAuth = tuple[str, str] | Credentials | None
HeaderList = Sequence[tuple[str, str]]

RECEIVE_SIZE = 65536


@dataclass(frozen=True)
class RouteOptions:
    """Everything that decides how a connection reaches its target."""

    proxy: ProxySetting = AUTO
    proxy_auth: ProxyAuth = None
    proxy_headers: HeaderList = ()
    ssl_context: ssl.SSLContext | None = None
    proxy_ssl_context: ssl.SSLContext | None = None
    connect_timeout: float = 10.0
    trace: Trace | None = field(default=None, compare=False)
    env: dict[str, str] | None = None
    # Restricts and orders the proxy authentication schemes (None: strongest
    # first, see tunnelws._auth.SCHEME_PREFERENCE).
    proxy_auth_schemes: tuple[str, ...] | None = None

    def credentials_for(self, proxy: ProxyURL) -> Credentials | None:
        """``proxy_auth`` wins over credentials embedded in the proxy URL."""
        if isinstance(self.proxy_auth, Credentials):
            return self.proxy_auth
        try:
            if self.proxy_auth is not None:
                user, password = self.proxy_auth
                return Credentials(user, password)
            if proxy.username is not None:
                return Credentials(proxy.username, proxy.password or "")
        except ValueError as exc:  # e.g. a colon in the user name
            raise ProxyConfigError(f"invalid proxy credentials: {exc}") from None
        return None


async def open_tunnel(
    host: str,
    port: int,
    *,
    scheme: str = "https",
    proxy: ProxySetting = AUTO,
    proxy_auth: ProxyAuth = None,
    proxy_headers: HeaderList = (),
    proxy_ssl_context: ssl.SSLContext | None = None,
    proxy_auth_schemes: Sequence[str] | None = None,
    connect_timeout: float = 10.0,
    trace: Trace | None = None,
) -> trio.abc.Stream:
    """Open a byte stream to ``host:port`` for any TCP protocol.

    The route is chosen as for a ``scheme://host:port`` URL (so ``https``
    consults ``https_proxy`` and ``no_proxy``); through a proxy the stream is an
    HTTP CONNECT tunnel and the host name is sent to the proxy unresolved.
    No TLS is started on the returned stream: wrap it yourself if needed.
    """
    target = Target(scheme, normalize_host(host), port, "/")
    options = RouteOptions(
        proxy=proxy,
        proxy_auth=proxy_auth,
        proxy_headers=tuple(proxy_headers),
        proxy_ssl_context=proxy_ssl_context,
        proxy_auth_schemes=scheme_names(proxy_auth_schemes),
        connect_timeout=connect_timeout,
        trace=trace,
    )
    return await open_route_stream(target, options, PhaseClock(connect_timeout))


def scheme_names(schemes: Sequence[str] | None) -> tuple[str, ...] | None:
    # A lone string would otherwise be read as a sequence of one-letter names.
    if isinstance(schemes, str):
        return (schemes,)
    return None if schemes is None else tuple(schemes)


async def open_origin_stream(
    target: Target,
    *,
    proxy: ProxySetting = AUTO,
    proxy_auth: ProxyAuth = None,
    proxy_headers: HeaderList | None = None,
    ssl_context: ssl.SSLContext | None = None,
    proxy_ssl_context: ssl.SSLContext | None = None,
    proxy_auth_schemes: Sequence[str] | None = None,
    connect_timeout: float = 10.0,
    trace: Trace | None = None,
) -> trio.abc.Stream:
    """A stream to ``target`` along its route, TLS done when it is secure."""
    options = RouteOptions(
        proxy=proxy,
        proxy_auth=proxy_auth,
        proxy_headers=tuple(proxy_headers or ()),
        ssl_context=ssl_context,
        proxy_ssl_context=proxy_ssl_context,
        proxy_auth_schemes=scheme_names(proxy_auth_schemes),
        connect_timeout=connect_timeout,
        trace=trace,
    )
    return await connect_origin(target, options, PhaseClock(connect_timeout))


async def connect_origin(
    target: Target, options: RouteOptions, clock: PhaseClock
) -> trio.abc.Stream:
    """A stream to the origin along its route, with TLS done for secure targets."""
    stream = await open_route_stream(target, options, clock)
    if not target.secure:
        return stream
    context = options.ssl_context or default_ssl_context()
    return await start_tls(
        stream, context, target.host, peer="origin", clock=clock, trace=options.trace
    )


async def open_route_stream(
    target: Target, options: RouteOptions, clock: PhaseClock
) -> trio.abc.Stream:
    """A plain stream to ``target.host:port``: direct or through a tunnel.

    With a PAC script, its routes are tried in order: a route whose proxy
    (or, for DIRECT, the origin) cannot be reached is recorded in the trace
    and the next one is tried; any other failure (auth, refusal, TLS) ends
    the attempt, as in browsers.
    """
    decision = resolve_proxy(target.url, options.proxy, env=options.env)
    trace = options.trace
    if trace:
        trace(f"* Route for {target.url}: {decision} ({decision.rule})")
    routes = await _candidate_routes(decision, target, clock, trace)
    failures: list[str] = []
    for number, route in enumerate(routes, start=1):
        try:
            return await _open_route(route, target, options, clock, decision)
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


async def _open_route(
    route: ProxyURL | None,
    target: Target,
    options: RouteOptions,
    clock: PhaseClock,
    decision: ProxyDecision,
) -> trio.abc.Stream:
    if route is None:
        return await _connect_tcp(target.host, target.port, clock, options.trace, via_proxy=False)
    if route.scheme in ("socks5", "socks5h"):
        return await open_socks_tunnel(
            route, target, options.credentials_for(route), clock, options.trace
        )
    if route.scheme not in ("http", "https"):  # pragma: no cover - ProxyURL.parse rejects others
        raise ProxyConfigError(f"unsupported proxy scheme in {route}", source=decision.source)
    return await _open_connect_tunnel(route, target, options, clock)


async def _connect_tcp(
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
            reason = _connect_failure_reason(exc)
            if via_proxy:
                raise ProxyConnectError(f"cannot connect to proxy {authority}: {reason}") from exc
            raise DirectConnectError(f"cannot connect to {authority}: {reason}") from exc
    if trace:
        trace(f"* Connected to {what} {authority}")
    return stream


def _connect_failure_reason(exc: OSError) -> str:
    """Why a connect failed: trio reports "all attempts ... failed" and keeps
    each address's own error (refused, unreachable) in an exception group."""
    # getattr, not isinstance: the builtin BaseExceptionGroup is 3.11+.
    attempts = getattr(exc.__cause__, "exceptions", ())
    reasons = dict.fromkeys(
        os.strerror(e.errno) if e.errno else str(e) for e in attempts if isinstance(e, OSError)
    )
    return ", ".join(reasons) or exc.strerror or str(exc)


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
        raise TLSError(_describe_tls_failure(exc, peer, server_hostname), peer=peer) from exc
    except BaseException:
        await trio.aclose_forcefully(tls)
        raise
    if trace:
        trace(f"* TLS with {peer} {server_hostname}: {tls.version()}, {_describe_peer_cert(tls)}")
    return tls


def _describe_tls_failure(exc: BaseException, peer: str, server_hostname: str) -> str:
    cause = exc.__cause__
    if isinstance(cause, ssl.SSLCertVerificationError):
        message = (
            f"TLS certificate of the {peer} {server_hostname} could not be verified: "
            f"{cause.verify_message}"
        )
        if peer == "origin":
            message += " (if a proxy intercepts TLS, trust its CA: --cacert FILE or ssl_context=)"
        return message
    if isinstance(cause, ssl.SSLError):
        return f"TLS handshake with the {peer} {server_hostname} failed: {cause.reason or cause}"
    return f"the {peer} {server_hostname} closed the connection during the TLS handshake"


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
    trace = options.trace
    try:
        authenticator = ProxyAuthenticator(
            options.credentials_for(proxy),
            authority=target.authority,
            proxy_host=proxy.host,
            schemes=options.proxy_auth_schemes,
        )
    except ValueError as exc:  # an unknown scheme name in proxy_auth_schemes
        raise ProxyConfigError(str(exc)) from None
    authorization = authenticator.initial_authorization()
    stream = await _connect_proxy(proxy, options, clock)
    try:
        while True:
            headers = [("User-Agent", USER_AGENT), *options.proxy_headers]
            if authorization is not None:
                headers.append(("Proxy-Authorization", authorization))
            request = build_connect_request(target.host, target.port, headers=headers)
            trace_head(
                trace,
                ">",
                f"CONNECT {target.authority} HTTP/1.1",
                [("Host", target.authority), *headers],
            )
            with clock.phase(
                "tunnel", f"waiting for the proxy's reply to CONNECT {target.authority}"
            ):
                reply, leftover = await _connect_exchange(stream, request)
            trace_head(
                trace,
                "<",
                f"HTTP/{reply.http_version} {reply.status} {reply.reason}",
                reply.headers,
            )
            if reply.ok:
                if trace:
                    trace(f"* Tunnel to {target.authority} established")
                return prefixed(stream, leftover)
            if reply.status != 407:
                raise _refusal(reply, target)
            # Bytes beyond the reply mean the proxy is out of step with us:
            # a new connection is safer than reusing this one. NTLM and
            # Negotiate cannot move to a new one mid-handshake: respond()
            # turns that into a clear error.
            reusable = reply.reusable and not leftover
            noted = len(authenticator.notes)
            try:
                authorization = authenticator.respond(reply, connection_reusable=reusable)
            finally:
                if trace:
                    for note in authenticator.notes[noted:]:
                        trace(f"* {note}")
            if trace:
                step = " (a connection-bound handshake)" if authenticator.connection_bound else ""
                trace(f"* Answering the proxy's challenge with {authenticator.scheme_used}{step}")
            if not reusable:
                if trace:
                    trace("* The proxy closed the connection after 407; retrying on a new one")
                await stream.aclose()
                stream = await _connect_proxy(proxy, options, clock)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise


async def _connect_proxy(
    proxy: ProxyURL, options: RouteOptions, clock: PhaseClock
) -> trio.abc.Stream:
    stream: trio.abc.Stream = await _connect_tcp(
        proxy.host, proxy.port, clock, options.trace, via_proxy=True
    )
    if proxy.scheme == "https":
        context = options.proxy_ssl_context or default_ssl_context()
        stream = await start_tls(
            stream, context, proxy.host, peer="proxy", clock=clock, trace=options.trace
        )
    return stream


async def _connect_exchange(stream: trio.abc.Stream, request: bytes) -> tuple[ProxyReply, bytes]:
    """Send one CONNECT and read the proxy's complete reply."""
    parser = ConnectReplyParser()
    try:
        await stream.send_all(request)
        while True:
            data = await stream.receive_some(RECEIVE_SIZE)
            reply = parser.feed(bytes(data)) if data else parser.feed_eof()
            if reply is not None:
                return reply, parser.leftover
            if not data:
                # feed_eof raises when EOF leaves the reply incomplete; this
                # line is only reached if the parser breaks that promise.
                raise ProxyProtocolError("proxy closed the connection without a complete reply")
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise ProxyProtocolError(
            "the connection to the proxy broke while negotiating the tunnel"
            f" ({exc.__cause__ or exc})"
        ) from exc


def _refusal(reply: ProxyReply, target: Target) -> ProxyRefusedError:
    message = f"proxy refused the tunnel to {target.authority}: {reply.status} {reply.reason}"
    if reply.status == 403 and target.port != 443:
        message += " (many proxies allow CONNECT only to port 443: try wss:// on port 443)"
    return ProxyRefusedError(
        message, status=reply.status, reason=reply.reason, headers=reply.headers, body=reply.body
    )


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
