"""The local proxy's absolute-form requests (``GET http://host/path``).

Such a request goes along the same route as a tunnel would (PAC failover:
:func:`~._transport.open_along_route`), and upstream it is the HTTP
client's exchange, :func:`~._http_client.send_request` on an
:class:`~._http_client.HTTPConnection`: absolute form to an HTTP(S) proxy
with its 407s answered (the request's method and target are Digest's method
and uri), origin form DIRECT and through SOCKS, a kept-alive connection
closed before answering replaced once. What is the local proxy's own is
here: the client's side (its absolute-form target, hop-by-hop fields,
``100 Continue``, relaying the answer or a ``101`` upgrade, per-read time
limits, byte counts) and keeping the upstream connection per route between
requests (an NTLM-authenticated proxy connection stays authenticated).

Credentials never go to a destination reached directly: the client's own
``Proxy-Authorization`` is dropped and ours is only ever added towards a
proxy.

A request body is kept, up to :data:`REPLAY_LIMIT` bytes, while the answer is
awaited, to send it again after a 407; a larger body cannot be resent and the
request fails with a clear error (a documented restriction).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import h11
import trio

from ._errors import (
    ConnectionLostError,
    HandshakeError,
    PhaseTimeoutError,
    ProxyAuthError,
    ProxyProtocolError,
)
from ._grammar import list_tokens
from ._http_client import HTTPConnection, open_connection, send_request, text_headers
from ._pipe import CHUNK_BYTES, join
from ._proxy_url import ProxyURL
from ._route import resolve_proxy
from ._route_options import RouteOptions
from ._target import DEFAULT_PORTS, Target, normalize_host
from ._timeouts import PhaseClock
from ._trace import Trace
from ._transport import open_along_route, prefixed

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
Headers = list[tuple[bytes, bytes]]


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
    values = (value.decode("latin-1") for key, value in headers if key.lower() == name)
    return {token.encode("latin-1") for token in list_tokens(values)}


def _end_to_end(headers: Headers) -> Headers:
    """Without hop-by-hop fields, those the Connection header names, and Host."""
    drop = HOP_BY_HOP | _tokens(headers, b"connection") | {b"host"}
    return [(name, value) for name, value in headers if name.lower() not in drop]


@contextmanager
def _guarded(within: float, peer: str, stuck: str) -> Iterator[None]:
    """One read or write of the client's stream: broken is
    :class:`ConnectionLostError`, nothing moving for ``within`` seconds
    :class:`PhaseTimeoutError` (``stuck`` says how)."""
    with trio.move_on_after(within) as scope:
        try:
            yield
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionLostError(
                f"the connection to {peer} broke: {exc.__cause__ or exc}"
            ) from exc
    if scope.cancelled_caught:
        raise PhaseTimeoutError(f"{stuck} for {within:g} s", phase="connected", timeout=within)


async def receive(
    conn: h11.Connection, stream: trio.abc.Stream, within: float, peer: str
) -> object:
    """The next h11 event from the client, reading from ``stream`` as
    needed; a read that waits ``within`` seconds raises
    :class:`PhaseTimeoutError`, a broken stream :class:`ConnectionLostError`."""
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        data = b""
        with _guarded(within, peer, f"no data from {peer}"):
            data = bytes(await stream.receive_some(CHUNK_BYTES))
        conn.receive_data(data)


async def send(stream: trio.abc.Stream, data: bytes | None, within: float, peer: str) -> None:
    """Write with a time limit: a peer that stops reading must not pin the
    connection forever."""
    if data:
        with _guarded(within, peer, f"{peer} took no data"):
            await stream.send_all(data)


class _ClientBody:
    """The client's request body as a :class:`~._http_client.RequestBody`:
    read from the client while it is sent upstream, kept (up to
    :data:`REPLAY_LIMIT`) to send again after a 407 or on a new connection."""

    def __init__(self, forwarder: Forwarder) -> None:
        self._forwarder = forwarder
        self._kept: list[bytes] | None = []
        self._size = 0
        self._complete = False

    @property
    def replayable(self) -> bool:
        return self._kept is not None

    async def chunks(self) -> AsyncIterator[bytes]:
        for chunk in list(self._kept or ()):
            yield chunk
        f = self._forwarder
        while not self._complete:
            event = await receive(f.client_conn, f.client, f.timeout, "the client")
            if isinstance(event, h11.EndOfMessage):
                self._complete = True
                return
            if not isinstance(event, h11.Data):
                raise ConnectionLostError("the client closed the connection mid-request")
            data = bytes(event.data)
            f.bytes_up += len(data)
            if self._kept is not None:
                self._size += len(data)
                if self._size <= REPLAY_LIMIT:
                    self._kept.append(data)
                else:
                    self._kept = None
            yield data


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
        self.upstream: HTTPConnection | None = None
        self._upstream_route: ProxyURL | None = None
        self._upstream_key: tuple[object, ...] = ()
        self.route_label = ""
        self.status: int | None = None
        self.bytes_up = 0
        self.bytes_down = 0
        self.switched = False

    async def aclose(self) -> None:
        if self.upstream is not None:
            await self.upstream.aclose()
            self.upstream = None

    async def forward(self, request: h11.Request) -> bool:
        """Forward ``request`` and relay the answer; True when the client
        connection may carry another request. Raises :class:`BadRequest` or a
        :class:`TunnelError` before any answer was sent to the client."""
        target = absolute_target(request.target)
        raw = list(request.headers.raw_items())
        headers = text_headers(_end_to_end(raw))
        upgrade = next((v for n, v in raw if n.lower() == b"upgrade"), None)
        if upgrade is not None and b"upgrade" in _tokens(raw, b"connection"):
            headers += [("Upgrade", upgrade.decode("latin-1")), ("Connection", "Upgrade")]
        if self.client_conn.they_are_waiting_for_100_continue:
            await self._to_client(h11.InformationalResponse(status_code=100, headers=[]))
        clock = PhaseClock(self.route.connect_timeout)
        upstream = await self._upstream_for(target, clock)
        body = _ClientBody(self)
        try:
            upstream, response = await send_request(
                upstream,
                request.method.decode("ascii"),
                target,
                headers,
                body,
                route=self.route,
                reconnect=lambda: self._connect(self._upstream_route, target, clock),
                user_agent=False,  # the client's request, as it sent it
                interim=self._relay_interim,
            )
        except ValueError as exc:  # h11 refuses to send it
            raise BadRequest(400, f"cannot forward this request: {exc}") from None
        except HandshakeError as exc:
            raise ProxyProtocolError(str(exc)) from None
        except ProxyAuthError as exc:
            if body.replayable:
                raise
            raise ProxyAuthError(
                f"{exc}: the local proxy keeps at most {REPLAY_LIMIT // 1024} KiB of a "
                "request body to send again; retry the request (the connection may now be "
                "authenticated) or use CONNECT",
                headers=exc.headers,
                body=exc.body,
                schemes=exc.schemes,
            ) from None
        return await self._relay_response(upstream, response)

    # -- the upstream connection ----------------------------------------------

    async def _upstream_for(self, target: Target, clock: PhaseClock) -> HTTPConnection:
        """The kept connection when the route goes the same way, else a new one."""
        self.route_label = str(resolve_proxy(target.url, self.route.proxy, env=self.route.env))

        async def reuse_or_connect(route: ProxyURL | None) -> HTTPConnection:
            current = self.upstream
            if current is not None and self._upstream_key == _key(route, target) and current.idle:
                self._note(f"* Re-using the connection to {current.label}")
                self.route_label = _label(route, target)
                return current
            return await self._connect(route, target, clock)

        upstream, _ = await open_along_route(target, self.route, clock, reuse_or_connect)
        return upstream

    async def _connect(
        self, route: ProxyURL | None, target: Target, clock: PhaseClock
    ) -> HTTPConnection:
        await self.aclose()
        upstream = await open_connection(route, target, self.route, clock)
        upstream.io_timeout = self.timeout  # a stuck upstream must not pin the client
        self.upstream, self._upstream_route = upstream, route
        self._upstream_key = _key(route, target)
        self.route_label = _label(route, target)
        return upstream

    # -- the answer, to the client ------------------------------------------------

    async def _to_client(self, event: h11.Event) -> None:
        await send(self.client, self.client_conn.send(event), self.timeout, "the client")

    async def _relay_interim(self, event: h11.InformationalResponse) -> None:
        await self._to_client(
            h11.InformationalResponse(
                status_code=event.status_code,
                headers=_end_to_end(list(event.headers.raw_items())),
                reason=event.reason,
            )
        )

    async def _relay_response(
        self, upstream: HTTPConnection, response: h11.Response | h11.InformationalResponse
    ) -> bool:
        self.status = response.status_code
        raw = list(response.headers.raw_items())
        if response.status_code == 101:
            upgrade = next((v for n, v in raw if n.lower() == b"upgrade"), b"")
            headers = [*_end_to_end(raw), (b"Upgrade", upgrade), (b"Connection", b"Upgrade")]
            await self._to_client(
                h11.InformationalResponse(status_code=101, headers=headers, reason=response.reason)
            )
            self.switched = True
            client = prefixed(self.client, self.client_conn.trailing_data[0])
            origin = prefixed(upstream.stream, upstream.http.trailing_data[0])
            self.upstream = None
            result = await join(client, origin, idle_timeout=self.timeout)
            self.bytes_up += result.a_to_b
            self.bytes_down += result.b_to_a
            return False
        await self._to_client(
            h11.Response(
                status_code=response.status_code, headers=_end_to_end(raw), reason=response.reason
            )
        )
        while True:
            try:
                event = await upstream.next_event()
            except HandshakeError as exc:
                raise ProxyProtocolError(str(exc)) from None
            if isinstance(event, h11.Data):
                self.bytes_down += len(event.data)
                await self._to_client(event)
            elif isinstance(event, h11.EndOfMessage):
                await self._to_client(h11.EndOfMessage())
                break
        if not upstream.finish_exchange():
            await self.aclose()
        return self.client_conn.our_state is h11.DONE and self.client_conn.their_state is h11.DONE

    def _note(self, line: str) -> None:
        if self.trace:
            self.trace(line)


def _key(route: ProxyURL | None, target: Target) -> tuple[object, ...]:
    if route is not None and route.scheme in ("http", "https"):
        return (route.scheme, route.host, route.port)
    return (route.redacted() if route else "DIRECT", target.host, target.port)


def _label(route: ProxyURL | None, target: Target) -> str:
    return route.redacted() if route is not None else f"DIRECT {target.authority}"
