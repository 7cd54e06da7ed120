"""The local proxy's absolute-form requests (``GET http://host/path``).

Such a request goes along the same route as a tunnel would: to an HTTP(S)
proxy it is forwarded in absolute form, its ``Proxy-Authorization`` computed
by the same :class:`ProxyAuthenticator` that answers for CONNECT (the
request's method and target are Digest's method and uri); DIRECT and through
SOCKS it goes in origin form. h11 frames both connections, so bodies stream
chunk by chunk and both connections are kept alive between requests (an
NTLM-authenticated proxy connection stays authenticated).

Credentials never go to a destination reached directly: the client's own
``Proxy-Authorization`` is dropped and ours is only ever added towards a
proxy.

A request body is kept, up to :data:`REPLAY_LIMIT` bytes, while the answer is
awaited, to send it again after a 407; a larger body cannot be resent and the
request fails with a clear error (a documented restriction).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import urlsplit

import h11
import trio

from ._auth import ProxyAuthenticator
from ._connect import ProxyReply
from ._errors import (
    ConnectionLostError,
    DirectConnectError,
    PhaseTimeoutError,
    ProxyAuthError,
    ProxyConfigError,
    ProxyConnectError,
    ProxyProtocolError,
)
from ._pipe import CHUNK_BYTES, join
from ._proxy_url import ProxyURL
from ._route import resolve_proxy
from ._route_options import RouteOptions
from ._target import DEFAULT_PORTS, Target, normalize_host
from ._timeouts import PhaseClock
from ._trace import Trace, trace_head
from ._transport import _candidate_routes, connect_proxy, open_route_stream, prefixed

__all__ = ["HOP_BY_HOP", "REPLAY_LIMIT", "BadRequest", "Forwarder", "absolute_target", "receive"]

REPLAY_LIMIT = 256 * 1024
# RFC 9110 7.6.1 connection-specific fields, and the proxy credentials.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"proxy-connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
    }
)
_CONNECTION_BOUND = ("NTLM", "Negotiate")

Headers = list[tuple[bytes, bytes]]


class ClosedBeforeAnswer(ConnectionLostError):
    """The server closed (or reset) the connection before any byte of its
    answer: on a kept-alive connection, the usual end of its life, after
    which a request is sent again on a new one (as browsers and curl do)."""


class BadRequest(Exception):
    """The client's request cannot be forwarded; ``status`` says how to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def absolute_target(raw: bytes) -> Target:
    """An absolute-form ``http://`` request target as a :class:`Target`."""
    text = raw.decode("ascii", "replace")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise BadRequest(400, f"invalid request target: {exc}") from None
    if parts.scheme.lower() != "http" or not parts.hostname:
        raise BadRequest(
            400,
            "this is a proxy: send CONNECT HOST:PORT or an absolute http:// URL "
            "(https:// goes through CONNECT)",
        )
    if parts.username is not None or parts.password is not None:
        raise BadRequest(400, "credentials in the request URL are not forwarded")
    try:
        host = normalize_host(parts.hostname)
    except ValueError as exc:
        raise BadRequest(400, str(exc)) from None
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    return Target("http", host, port or DEFAULT_PORTS["http"], resource)


def _tokens(headers: Headers, name: bytes) -> set[bytes]:
    return {
        token.strip().lower()
        for key, value in headers
        if key.lower() == name
        for token in value.split(b",")
        if token.strip()
    }


def _end_to_end(headers: Headers) -> Headers:
    """Without hop-by-hop fields, those the Connection header names, and Host."""
    drop = HOP_BY_HOP | _tokens(headers, b"connection") | {b"host"}
    return [(name, value) for name, value in headers if name.lower() not in drop]


def _text(headers: Headers) -> list[tuple[str, str]]:
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers]


async def receive(
    conn: h11.Connection, stream: trio.abc.Stream, within: float, peer: str
) -> object:
    """The next h11 event, reading from ``stream`` as needed; a read that
    waits ``within`` seconds raises :class:`PhaseTimeoutError`, a broken
    stream :class:`ConnectionLostError` (:class:`ClosedBeforeAnswer` when a
    server awaited for its answer ends the connection without a byte)."""
    received = False
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        awaiting_answer = conn.our_role is h11.CLIENT and conn.their_state is h11.SEND_RESPONSE
        with trio.move_on_after(within) as scope:
            try:
                data = bytes(await stream.receive_some(CHUNK_BYTES))
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                error = (
                    ClosedBeforeAnswer if awaiting_answer and not received else ConnectionLostError
                )
                raise error(f"the connection to {peer} broke: {exc.__cause__ or exc}") from exc
        if scope.cancelled_caught:
            raise PhaseTimeoutError(
                f"no data from {peer} for {within:g} s", phase="connected", timeout=within
            )
        if not data and awaiting_answer and not received:
            raise ClosedBeforeAnswer(f"{peer} closed the connection without answering")
        received = True
        conn.receive_data(data)


async def send(stream: trio.abc.Stream, data: bytes | None, within: float, peer: str) -> None:
    """Write with a time limit: a peer that stops reading must not pin the
    connection forever."""
    if not data:
        return
    with trio.move_on_after(within) as scope:
        try:
            await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionLostError(
                f"the connection to {peer} broke: {exc.__cause__ or exc}"
            ) from exc
    if scope.cancelled_caught:
        raise PhaseTimeoutError(
            f"{peer} took no data for {within:g} s", phase="connected", timeout=within
        )


@dataclass
class _Upstream:
    key: tuple[object, ...]
    stream: trio.abc.Stream
    conn: h11.Connection
    proxy: ProxyURL | None  # an HTTP(S) proxy: absolute form, Proxy-Authorization
    route: ProxyURL | None  # how it was reached (None: DIRECT)
    label: str
    authenticated: bool = False  # by NTLM/Negotiate, which bind the connection
    reused: bool = False  # has carried an exchange before this one


class _Body:
    """The client's request body: streamed upstream once, kept for a resend."""

    def __init__(self, forwarder: Forwarder) -> None:
        self._forwarder = forwarder
        self._kept: list[bytes] | None = []
        self._size = 0
        self._read = False

    @property
    def replayable(self) -> bool:
        return self._kept is not None

    async def send_to(self, upstream: _Upstream) -> None:
        f = self._forwarder
        if self._read:
            for chunk in self._kept or ():
                await send(
                    upstream.stream,
                    upstream.conn.send(h11.Data(data=chunk)),
                    f.timeout,
                    upstream.label,
                )
        else:
            while True:
                event = await receive(f.client_conn, f.client, f.timeout, "the client")
                if isinstance(event, h11.EndOfMessage):
                    break
                if not isinstance(event, h11.Data):
                    raise ConnectionLostError("the client closed the connection mid-request")
                data = bytes(event.data)
                f.bytes_up += len(data)
                if self._kept is not None:
                    self._size += len(data)
                    self._kept = [*self._kept, data] if self._size <= REPLAY_LIMIT else None
                await send(
                    upstream.stream,
                    upstream.conn.send(h11.Data(data=data)),
                    f.timeout,
                    upstream.label,
                )
            self._read = True
        await send(
            upstream.stream, upstream.conn.send(h11.EndOfMessage()), f.timeout, upstream.label
        )


class Forwarder:
    """Forwards one client connection's absolute-form requests, one at a time."""

    def __init__(
        self,
        client: trio.abc.Stream,
        client_conn: h11.Connection,
        route: RouteOptions,
        *,
        timeout: float,
    ) -> None:
        self.client = client
        self.client_conn = client_conn
        self.route = route
        self.timeout = timeout
        self.trace: Trace | None = route.trace
        self.upstream: _Upstream | None = None
        self.route_label = ""
        self.status: int | None = None
        self.bytes_up = 0
        self.bytes_down = 0
        self.switched = False

    async def aclose(self) -> None:
        if self.upstream is not None:
            await trio.aclose_forcefully(self.upstream.stream)
            self.upstream = None

    async def forward(self, request: h11.Request) -> bool:
        """Forward ``request`` and relay the answer; True when the client
        connection may carry another request. Raises :class:`BadRequest` or a
        :class:`TunnelError` before any answer was sent to the client."""
        target = absolute_target(request.target)
        headers = list(request.headers.raw_items())
        upgrade = b"upgrade" in _tokens(headers, b"connection") and any(
            name.lower() == b"upgrade" for name, _ in headers
        )
        if self.client_conn.they_are_waiting_for_100_continue:
            await send(
                self.client,
                self.client_conn.send(h11.InformationalResponse(status_code=100, headers=[])),
                self.timeout,
                "the client",
            )
        clock = PhaseClock(self.route.connect_timeout)
        upstream = await self._upstream_for(target, clock)
        body = _Body(self)
        method = request.method.decode("ascii")
        authenticator = self._authenticator(upstream, target, method)
        authorization = authenticator.initial_authorization() if authenticator else None
        while True:
            try:
                await self._send_head(upstream, request, target, headers, upgrade, authorization)
                await body.send_to(upstream)
                response = await self._response_head(upstream)
            except ClosedBeforeAnswer:
                if not (upstream.reused and body.replayable):
                    raise
                self._note(f"* {upstream.label} closed the kept connection; sending again")
                upstream = await self._connect(upstream.route, target, clock)
                authenticator = self._authenticator(upstream, target, method)
                authorization = authenticator.initial_authorization() if authenticator else None
                continue
            if response.status_code != 407 or authenticator is None:
                break
            await self._drain(upstream)
            reusable = upstream.conn.our_state is h11.DONE and upstream.conn.their_state is h11.DONE
            reply = ProxyReply(
                http_version=response.http_version.decode("ascii"),
                status=407,
                reason=response.reason.decode("latin-1"),
                headers=tuple(_text(list(response.headers.raw_items()))),
                body=b"",
                reusable=reusable,
            )
            noted = len(authenticator.notes)
            try:
                authorization = authenticator.respond(reply, connection_reusable=reusable)
            finally:
                self._trace_notes(authenticator.notes[noted:])
            if not body.replayable:
                raise ProxyAuthError(
                    f"the proxy asked for authentication after a request body of more than "
                    f"{REPLAY_LIMIT // 1024} KiB, which the local proxy does not keep to send "
                    "again; retry the request (the connection may now be authenticated) or "
                    "use CONNECT",
                    headers=reply.headers,
                )
            if reusable:
                upstream.conn.start_next_cycle()
            else:
                self._note("* The proxy closed the connection after 407; retrying on a new one")
                await self.aclose()
                upstream = await self._connect(upstream.proxy, target, clock)
        if authenticator is not None and authenticator.scheme_used in _CONNECTION_BOUND:
            upstream.authenticated = True
        return await self._relay_response(upstream, response)

    # -- the upstream connection ----------------------------------------------

    async def _upstream_for(self, target: Target, clock: PhaseClock) -> _Upstream:
        """The kept connection when it goes the same way, else a new one; PAC
        routes are tried in order as for tunnels (unreachable: next)."""
        decision = resolve_proxy(target.url, self.route.proxy, env=self.route.env)
        self.route_label = str(decision)
        if self.trace:
            self.trace(f"* Route for {target.url}: {decision} ({decision.rule})")
        routes = await _candidate_routes(decision, target, clock, self.trace)
        failures: list[str] = []
        for number, route in enumerate(routes, start=1):
            current = self.upstream
            if (
                current is not None
                and current.key == _key(route, target)
                and current.conn.our_state is h11.IDLE
                and current.conn.their_state is h11.IDLE
            ):
                self._note(f"* Re-using the connection to {current.label}")
                current.reused = True
                return current
            try:
                return await self._connect(route, target, clock)
            except (DirectConnectError, ProxyConnectError) as exc:
                if len(routes) == 1:
                    raise
                label = _label(route, target)
                failures.append(f"{label}: {exc}")
                self._note(f"* Route {number}/{len(routes)} {label} failed: {exc}")
        summary = f"every route from {decision} failed: " + "; ".join(failures)
        raise ProxyConnectError(summary)

    async def _connect(
        self, route: ProxyURL | None, target: Target, clock: PhaseClock
    ) -> _Upstream:
        await self.aclose()
        if route is not None and route.scheme in ("http", "https"):
            stream = await connect_proxy(route, self.route, clock)
            proxy: ProxyURL | None = route
        else:
            stream = await open_route_stream(target, replace(self.route, proxy=route), clock)
            proxy = None
        self.route_label = _label(route, target)
        self.upstream = _Upstream(
            _key(route, target), stream, h11.Connection(h11.CLIENT), proxy, route, self.route_label
        )
        return self.upstream

    def _authenticator(
        self, upstream: _Upstream, target: Target, method: str
    ) -> ProxyAuthenticator | None:
        proxy = upstream.proxy
        if proxy is None:
            return None
        try:
            return ProxyAuthenticator(
                self.route.credentials_for(proxy),
                authority=target.url,
                method=method,
                proxy_host=proxy.host,
                schemes=self.route.proxy_auth_schemes,
                # An NTLM-authenticated connection needs nothing more.
                preemptive_basic=not upstream.authenticated,
            )
        except ValueError as exc:  # an unknown scheme name
            raise ProxyConfigError(str(exc)) from None

    # -- one exchange -------------------------------------------------------------

    async def _send_head(
        self,
        upstream: _Upstream,
        request: h11.Request,
        target: Target,
        headers: Headers,
        upgrade: bool,
        authorization: str | None,
    ) -> None:
        outgoing: list[tuple[str, str]] = [
            ("Host", target.host_header),
            *_text(_end_to_end(headers)),
        ]
        if upgrade:
            value = next(v for n, v in headers if n.lower() == b"upgrade")
            outgoing += [("Upgrade", value.decode("latin-1")), ("Connection", "Upgrade")]
        if upstream.proxy is not None:
            outgoing += self.route.proxy_headers
            if authorization is not None:
                outgoing.append(("Proxy-Authorization", authorization))
        request_target = target.url if upstream.proxy is not None else target.resource
        method = request.method.decode("ascii")
        trace_head(self.trace, ">", f"{method} {request_target} HTTP/1.1", outgoing)
        try:
            data = upstream.conn.send(
                h11.Request(method=method, target=request_target, headers=outgoing)
            )
        except h11.LocalProtocolError as exc:
            raise BadRequest(400, f"cannot forward this request: {exc}") from None
        await send(upstream.stream, data, self.timeout, upstream.label)

    async def _response_head(self, upstream: _Upstream) -> h11.Response | h11.InformationalResponse:
        while True:
            try:
                event = await receive(upstream.conn, upstream.stream, self.timeout, upstream.label)
            except h11.RemoteProtocolError as exc:
                raise ProxyProtocolError(f"malformed answer from {upstream.label}: {exc}") from None
            if isinstance(event, h11.ConnectionClosed):
                raise ConnectionLostError(
                    f"{upstream.label} closed the connection without answering"
                )
            if not isinstance(event, (h11.Response, h11.InformationalResponse)):
                raise ProxyProtocolError(f"unexpected answer from {upstream.label}: {event!r}")
            trace_head(
                self.trace,
                "<",
                f"HTTP/{event.http_version.decode()} {event.status_code} "
                f"{event.reason.decode('latin-1')}",
                _text(list(event.headers.raw_items())),
            )
            if isinstance(event, h11.Response) or event.status_code == 101:
                return event
            if event.status_code != 100:  # 100 Continue was ours to give
                await send(
                    self.client,
                    self.client_conn.send(
                        h11.InformationalResponse(
                            status_code=event.status_code,
                            headers=_end_to_end(list(event.headers.raw_items())),
                            reason=event.reason,
                        )
                    ),
                    self.timeout,
                    "the client",
                )

    async def _drain(self, upstream: _Upstream) -> None:
        """Read a 407's body to its end (kept nowhere)."""
        while True:
            event = await receive(upstream.conn, upstream.stream, self.timeout, upstream.label)
            if isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return

    async def _relay_response(
        self, upstream: _Upstream, response: h11.Response | h11.InformationalResponse
    ) -> bool:
        self.status = response.status_code
        raw = list(response.headers.raw_items())
        if response.status_code == 101:
            upgrade = next((v for n, v in raw if n.lower() == b"upgrade"), b"")
            headers = [*_end_to_end(raw), (b"Upgrade", upgrade), (b"Connection", b"Upgrade")]
            await send(
                self.client,
                self.client_conn.send(
                    h11.InformationalResponse(
                        status_code=101, headers=headers, reason=response.reason
                    )
                ),
                self.timeout,
                "the client",
            )
            self.switched = True
            client = prefixed(self.client, self.client_conn.trailing_data[0])
            origin = prefixed(upstream.stream, upstream.conn.trailing_data[0])
            self.upstream = None
            result = await join(client, origin, idle_timeout=self.timeout)
            self.bytes_up += result.a_to_b
            self.bytes_down += result.b_to_a
            return False
        await send(
            self.client,
            self.client_conn.send(
                h11.Response(
                    status_code=response.status_code,
                    headers=_end_to_end(raw),
                    reason=response.reason,
                )
            ),
            self.timeout,
            "the client",
        )
        while True:
            event = await receive(upstream.conn, upstream.stream, self.timeout, upstream.label)
            if isinstance(event, h11.Data):
                self.bytes_down += len(event.data)
                await send(self.client, self.client_conn.send(event), self.timeout, "the client")
            elif isinstance(event, h11.EndOfMessage):
                await send(
                    self.client,
                    self.client_conn.send(h11.EndOfMessage()),
                    self.timeout,
                    "the client",
                )
                break
            else:
                raise ConnectionLostError(f"{upstream.label} ended the answer early")
        if upstream.conn.our_state is h11.DONE and upstream.conn.their_state is h11.DONE:
            upstream.conn.start_next_cycle()
        else:
            await self.aclose()
        return self.client_conn.our_state is h11.DONE and self.client_conn.their_state is h11.DONE

    def _note(self, line: str) -> None:
        if self.trace:
            self.trace(line)

    def _trace_notes(self, notes: list[str]) -> None:
        for note in notes:
            self._note(f"* {note}")


def _key(route: ProxyURL | None, target: Target) -> tuple[object, ...]:
    if route is not None and route.scheme in ("http", "https"):
        return (route.scheme, route.host, route.port)
    return (route.redacted() if route else "DIRECT", target.host, target.port)


def _label(route: ProxyURL | None, target: Target) -> str:
    return route.redacted() if route is not None else f"DIRECT {target.authority}"
