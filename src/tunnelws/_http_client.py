"""HTTP/1.1 requests along the route, with h11: what the HTTP fallback sends.

The route is the WebSocket's (:class:`~tunnelws.RouteOptions`: environment,
PAC, every authentication scheme). How a request travels depends on the route
and on the origin's scheme:

* DIRECT: origin-form requests on a connection to the origin (TLS for
  ``https://``);
* an HTTP(S) proxy and an ``http://`` origin: absolute-form requests to the
  proxy (``GET http://host/path``), whose 407s are answered by the same
  :class:`~tunnelws._auth.ProxyAuthenticator` that answers for CONNECT (the
  request's method and target are Digest's method and uri); NTLM and
  Negotiate keep the connection across their 407s, and it stays
  authenticated for the requests after;
* an HTTP(S) proxy and an ``https://`` origin: the transport's CONNECT tunnel,
  TLS inside, origin-form requests;
* SOCKS5: a tunnel, then as DIRECT.

Connections are kept alive and reused; a kept-alive connection that the
server or proxy closed before answering is the usual end of its life, and the
request goes again on a new one (as browsers and curl do). Every phase has a
time limit: connecting spends the route's ``connect_timeout``, the exchange
the caller's ``timeout``, each body read its own.

:func:`send_request` is the piece that sends one request on one
:class:`HTTPConnection` and answers the proxy's 407s; a local forwarding
proxy uses it as it is. :class:`HTTPClient` adds the route choice and a pool.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractContextManager, asynccontextmanager
from dataclasses import dataclass, replace
from typing import Protocol
from urllib.parse import quote

import h11
import trio

from ._auth import ProxyAuthenticator
from ._auth_thread import respond
from ._connect import ProxyReply
from ._errors import (
    MAX_KEPT_BODY,
    ConnectionLostError,
    HandshakeError,
    ProxyAuthError,
    ProxyConfigError,
    TunnelError,
)
from ._proxy_url import ProxyURL
from ._route_options import RouteOptions
from ._streamio import StreamIO
from ._target import Target
from ._timeouts import PhaseClock
from ._trace import Trace, trace_head
from ._transport import connect_proxy, open_along_route, open_via, secure_origin
from ._version import USER_AGENT

__all__ = [
    "ExchangeBroken",
    "HTTPClient",
    "HTTPConnection",
    "RequestBody",
    "Response",
    "StreamedResponse",
    "open_connection",
    "send_request",
    "text_headers",
]

RECEIVE_SIZE = 65536
_CONNECTION_BOUND = ("ntlm", "negotiate")
# Left as they are on the request line (existing %XX escapes survive).
_PRINTABLE_ASCII = "".join(chr(c) for c in range(0x21, 0x7F))


class ExchangeBroken(ConnectionLostError):
    """The connection broke (reset, closed, or the response cut short)
    during an exchange. ``answered`` says whether any byte of the response
    had arrived: a kept-alive connection the server closed breaks before
    that, and the request can go again on a new connection."""

    def __init__(self, message: str, *, answered: bool) -> None:
        super().__init__(message)
        self.answered = answered


class RequestBody(Protocol):
    """A request body streamed from elsewhere (a local proxy's client).

    ``replayable`` says whether :meth:`chunks` can run again (to resend the
    body after a 407 or on a new connection); the request's headers must
    frame it (``Content-Length`` or ``Transfer-Encoding``).
    """

    @property
    def replayable(self) -> bool: ...

    def chunks(self) -> AsyncIterator[bytes]: ...


class HTTPConnection:
    """One HTTP/1.1 client connection, to the origin or (``proxy`` set) to an
    HTTP proxy that takes absolute-form requests. Only moves bytes and keeps
    h11's state; time limits belong to the caller, except ``io_timeout``:
    when set, each write and each read must move within that many seconds
    (a forwarding proxy's guard against a stuck peer), else
    :class:`~tunnelws.PhaseTimeoutError`."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        proxy: ProxyURL | None,
        label: str,
        io_timeout: float | None = None,
    ) -> None:
        self.stream = stream
        self._io = StreamIO(stream)  # descriptor I/O on plain TCP: fewer scheduler passes
        self.http = h11.Connection(our_role=h11.CLIENT)
        self.proxy = proxy
        self.label = label
        self.io_timeout = io_timeout
        #: An NTLM/Negotiate handshake authenticated this connection.
        self.authenticated = False
        #: Exchanges completed on it (a reused connection has at least one).
        self.exchanges = 0
        #: Opened ahead of its first request: it waited idle, as a kept one does.
        self.opened_ahead = False
        self._answered = False
        self._eof = False

    def __repr__(self) -> str:
        return f"<HTTPConnection to {self.label}, {self.exchanges} exchanges>"

    @property
    def idle(self) -> bool:
        return self.http.our_state is h11.IDLE and self.http.their_state is h11.IDLE

    def finish_exchange(self) -> bool:
        """After a complete response: ready the connection for the next
        request; False when it cannot carry one (then close it)."""
        if self.http.our_state is h11.DONE and self.http.their_state is h11.DONE:
            self.http.start_next_cycle()
            self.exchanges += 1
            return True
        return False

    async def send(self, *events: h11.Event) -> None:
        """Send ``events`` in one write: a request's head, body and end go
        together, so the peer wakes once for them, not once per event."""
        data = b"".join(self.http.send(event) or b"" for event in events)
        if not data:
            return
        try:
            if self.io_timeout is None:
                await self._io.send_all(data)
            else:
                with self._io_limit(f"sending to {self.label}"):
                    await self._io.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ExchangeBroken(
                f"the connection to {self.label} broke while sending: {exc.__cause__ or exc}",
                answered=self._answered,
            ) from exc

    def start_request(self) -> None:
        self._answered = False

    async def next_event(self) -> h11.Event:
        """The next h11 event of the response, reading as needed; a broken or
        closed connection raises :class:`ExchangeBroken`, bytes that are not
        HTTP :class:`~tunnelws.HandshakeError`."""
        while True:
            try:
                event = self.http.next_event()
            except h11.RemoteProtocolError as exc:
                if self._eof:
                    raise ExchangeBroken(
                        f"{self.label} closed the connection in the middle of a response",
                        answered=self._answered,
                    ) from exc
                raise HandshakeError(f"malformed HTTP response from {self.label}: {exc}") from exc
            if event is h11.NEED_DATA:
                try:
                    if self.io_timeout is None:
                        data = bytes(await self._io.receive_some(RECEIVE_SIZE))
                    else:
                        with self._io_limit(f"waiting for data from {self.label}"):
                            data = bytes(await self._io.receive_some(RECEIVE_SIZE))
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    raise ExchangeBroken(
                        f"the connection to {self.label} broke: {exc.__cause__ or exc}",
                        answered=self._answered,
                    ) from exc
                if data:
                    self._answered = True
                else:
                    self._eof = True
                self.http.receive_data(data)
                continue
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                raise ExchangeBroken(
                    f"{self.label} closed the connection without answering",
                    answered=self._answered,
                )
            assert isinstance(event, h11.Event)
            return event

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)

    def _io_limit(self, doing: str) -> AbstractContextManager[None]:
        assert self.io_timeout is not None
        return PhaseClock(self.io_timeout).phase("connected", doing)


async def open_connection(
    route: ProxyURL | None, origin: Target, options: RouteOptions, clock: PhaseClock
) -> HTTPConnection:
    """An :class:`HTTPConnection` for requests to ``origin`` over one route:
    to an HTTP(S) proxy itself for a plain origin (absolute form), else a
    stream to the origin (DIRECT, SOCKS or a CONNECT tunnel; TLS for
    ``https://``)."""
    if route is not None and route.scheme in ("http", "https") and not origin.secure:
        stream = await connect_proxy(route, options, clock)
        return HTTPConnection(stream, proxy=route, label=f"the proxy {route.authority}")
    stream = await open_via(route, origin, options, clock)
    stream = await secure_origin(stream, origin, options, clock)
    return HTTPConnection(stream, proxy=None, label=origin.authority)


def request_target(resource: str) -> str:
    """A resource as it goes on the request line: non-ASCII characters and
    spaces percent-encoded (as browsers do), everything else untouched."""
    return quote(resource, safe=_PRINTABLE_ASCII)


def text_headers(headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """h11's raw headers as text (latin-1, as HTTP/1.1 allows)."""
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers]


def _authenticator(
    connection: HTTPConnection, target: Target, method: str, route: RouteOptions
) -> ProxyAuthenticator | None:
    proxy = connection.proxy
    if proxy is None:
        return None
    try:
        return ProxyAuthenticator(
            route.credentials_for(proxy),
            authority=target.url,
            method=method,
            proxy_host=proxy.host,
            schemes=route.proxy_auth_schemes,
            # An NTLM-authenticated connection needs nothing more.
            preemptive_basic=not connection.authenticated,
        )
    except ValueError as exc:  # an unknown scheme name
        raise ProxyConfigError(str(exc)) from None


async def send_request(
    connection: HTTPConnection,
    method: str,
    target: Target,
    headers: Sequence[tuple[str, str]],
    body: bytes | RequestBody = b"",
    *,
    route: RouteOptions,
    reconnect: Callable[[], Awaitable[HTTPConnection]],
    trace_heads: bool = True,
    user_agent: bool = True,
    interim: Callable[[h11.InformationalResponse], Awaitable[None]] | None = None,
) -> tuple[HTTPConnection, h11.Response | h11.InformationalResponse]:
    """Send one request and read the answer's head: the connection that
    carries the answer (``connection`` or a new one from ``reconnect``) and
    the head (a final response, or a ``101``); the caller reads the body
    from the connection.

    On a connection to a proxy the request goes in absolute form with the
    route's proxy headers, and 407s are answered (on the same connection when
    the proxy keeps it open, which NTLM and Negotiate need; else on a new
    one) until the authenticator gives up with
    :class:`~tunnelws.ProxyAuthError`. Credentials never go to an origin.
    ``headers`` come after ``Host`` (and tunnelws's ``User-Agent`` unless
    given, or ``user_agent`` is False: a forwarded request keeps its own);
    a ``bytes`` body gets its ``Content-Length``. Interim answers other than
    ``100`` go to ``interim`` when given (a forwarding proxy relays them).
    A kept-alive connection that breaks before any byte of the answer is
    replaced once by ``reconnect``. No time limit here but the connection's
    ``io_timeout``: the caller sets one around the call.
    """
    trace = route.trace if trace_heads else None
    authenticator = _authenticator(connection, target, method, route)
    authorization = authenticator.initial_authorization() if authenticator else None
    resent = False
    while True:
        # NTLM's first message gets a 407 whatever it carries: no body then.
        first_leg = authenticator is not None and authenticator.challenge_certain
        try:
            await _write_request(
                connection,
                method,
                target,
                _unframed(headers) if first_leg else headers,
                b"" if first_leg else body,
                route,
                authorization,
                trace,
                user_agent,
            )
            head = await _response_head(connection, trace, interim)
        except ExchangeBroken as exc:
            replayable = isinstance(body, bytes) or body.replayable
            waited = connection.exchanges or connection.opened_ahead
            if exc.answered or not waited or resent or not replayable:
                raise
            resent = True
            if route.trace:
                route.trace(f"* {connection.label} closed the kept-alive connection; sending again")
            await connection.aclose()
            connection = await reconnect()
            authenticator = _authenticator(connection, target, method, route)
            authorization = authenticator.initial_authorization() if authenticator else None
            continue
        if head.status_code != 407 or authenticator is None:
            if authenticator is not None and (authenticator.scheme_used or "").lower() in (
                _CONNECTION_BOUND
            ):
                connection.authenticated = True
            return connection, head
        kept = await _read_kept_body(connection)
        reusable = connection.finish_exchange()
        reply = ProxyReply(
            http_version=head.http_version.decode("ascii"),
            status=407,
            reason=head.reason.decode("latin-1"),
            headers=tuple(text_headers(list(head.headers.raw_items()))),
            body=kept,
            reusable=reusable,
        )
        noted = len(authenticator.notes)
        try:
            authorization = await respond(authenticator, reply, connection_reusable=reusable)
        finally:
            if route.trace:
                for note in authenticator.notes[noted:]:
                    route.trace(f"* {note}")
        if not (isinstance(body, bytes) or body.replayable):
            raise ProxyAuthError(
                "the proxy asked for authentication after a request body that cannot be sent again",
                headers=reply.headers,
                body=kept,
            )
        if route.trace:
            route.trace(f"* Answering the proxy's challenge with {authenticator.scheme_used}")
        if not reusable:
            if route.trace:
                route.trace("* The proxy closed the connection after 407; retrying on a new one")
            await connection.aclose()
            connection = await reconnect()


def _unframed(headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers without the body's framing, for a leg sent without the body."""
    framing = ("content-length", "transfer-encoding")
    return [(name, value) for name, value in headers if name.lower() not in framing]


async def _write_request(
    connection: HTTPConnection,
    method: str,
    target: Target,
    headers: Sequence[tuple[str, str]],
    body: bytes | RequestBody,
    route: RouteOptions,
    authorization: str | None,
    trace: Trace | None,
    user_agent: bool,
) -> None:
    names = {name.lower() for name, _ in headers}
    outgoing = [("Host", target.host_header)]
    if user_agent and "user-agent" not in names:
        outgoing.append(("User-Agent", USER_AGENT))
    outgoing += headers
    if isinstance(body, bytes) and "content-length" not in names and (body or method != "GET"):
        outgoing.append(("Content-Length", str(len(body))))
    if connection.proxy is not None:
        outgoing += route.proxy_headers
        if authorization is not None:
            outgoing.append(("Proxy-Authorization", authorization))
    line_target = target.url if connection.proxy is not None else target.resource
    line_target = request_target(line_target)
    trace_head(trace, ">", f"{method} {line_target} HTTP/1.1", outgoing)
    connection.start_request()
    try:
        head = h11.Request(method=method, target=line_target, headers=outgoing)
        if isinstance(body, bytes):
            data = [h11.Data(data=body)] if body else []
            await connection.send(head, *data, h11.EndOfMessage())
            return
        # A streamed body: the head goes with its first piece; each piece as
        # it comes (the peer may wait for it), the end after the last.
        pending: list[h11.Event] = [head]
        async for chunk in body.chunks():
            await connection.send(*pending, h11.Data(data=chunk))
            pending = []
        await connection.send(*pending, h11.EndOfMessage())
    except h11.LocalProtocolError as exc:
        raise ValueError(f"cannot send this request: {exc}") from None


async def _response_head(
    connection: HTTPConnection,
    trace: Trace | None,
    interim: Callable[[h11.InformationalResponse], Awaitable[None]] | None,
) -> h11.Response | h11.InformationalResponse:
    while True:
        event = await connection.next_event()
        if not isinstance(event, (h11.Response, h11.InformationalResponse)):
            raise HandshakeError(f"unexpected HTTP event from {connection.label}: {event!r}")
        trace_head(
            trace,
            "<",
            f"HTTP/{event.http_version.decode()} {event.status_code} "
            f"{event.reason.decode('latin-1')}",
            text_headers(list(event.headers.raw_items())),
        )
        # Interim answers (100 Continue) are skipped; a 101 is the caller's.
        if isinstance(event, h11.Response) or event.status_code == 101:
            return event
        if interim is not None and event.status_code != 100:
            await interim(event)


async def _read_kept_body(connection: HTTPConnection) -> bytes:
    """Read a response body to its end, keeping its first bytes."""
    kept = bytearray()
    while True:
        event = await connection.next_event()
        if isinstance(event, h11.Data):
            if len(kept) < MAX_KEPT_BODY:
                kept += event.data[: MAX_KEPT_BODY - len(kept)]
        elif isinstance(event, h11.EndOfMessage):
            return bytes(kept)


# -- the client: route, pool, time limits ----------------------------------------------


@dataclass(frozen=True)
class Response:
    """A whole response: status, reason, headers (in order) and body."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return _header(self.headers, name)


def _header(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    wanted = name.lower()
    return next((value for key, value in headers if key.lower() == wanted), None)


class StreamedResponse:
    """A response whose body is read piece by piece (an event stream)."""

    def __init__(self, connection: HTTPConnection, head: h11.Response, phase: str) -> None:
        self.status = head.status_code
        self.reason = head.reason.decode("latin-1")
        self.headers = text_headers(list(head.headers.raw_items()))
        self.complete = False
        self._connection = connection
        self._phase = phase

    def header(self, name: str) -> str | None:
        return _header(self.headers, name)

    async def receive_some(self, within: float) -> bytes:
        """The next piece of the body, ``b""`` at its end; no byte within
        ``within`` seconds raises :class:`~tunnelws.PhaseTimeoutError`."""
        if self.complete:
            return b""
        with PhaseClock(within).phase(self._phase, f"waiting for data from {self.label}"):
            return await self._piece()

    async def _piece(self) -> bytes:
        while not self.complete:
            event = await self._connection.next_event()
            if isinstance(event, h11.Data):
                if event.data:
                    return bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self.complete = True
        return b""

    async def read(self, limit: int, within: float) -> bytes:
        """The whole body within ``within`` seconds; more than ``limit``
        bytes is a :class:`~tunnelws.HandshakeError`."""
        body = bytearray()
        clock = PhaseClock(within)
        # One time limit for the whole body (not one per piece: each is a
        # cancel scope, a measurable share of a small request's cost).
        with clock.phase(self._phase, f"reading the response from {self.label}"):
            while chunk := await self._piece():
                body += chunk
                if len(body) > limit:
                    raise HandshakeError(
                        f"the response from {self.label} exceeds {limit} bytes",
                        status=self.status,
                        headers=self.headers,
                    )
        return bytes(body)

    @property
    def label(self) -> str:
        return self._connection.label


class HTTPClient:
    """Requests to one origin (``http://`` or ``https://``) along the route,
    on kept-alive connections.

    Each request names a *lane* (``""`` unless given); a connection that
    finished a request is kept for the next request of the same lane (at
    most ``max_idle`` per lane), so requests of one kind never take a
    connection another kind is about to use (the HTTP fallback: one lane for
    upstream POSTs, one for downstream requests).

    The route is chosen at the first connection (PAC routes in order, an
    unreachable one skipped) and kept for the client's life. Use it from
    one trio task per concurrent request; close it with :meth:`aclose`.
    """

    def __init__(self, origin: Target, route: RouteOptions, *, max_idle: int = 2) -> None:
        if origin.scheme not in ("http", "https"):
            raise ValueError(f"an HTTP client needs an http:// or https:// origin, not {origin}")
        self.origin = origin
        self.route = route
        self.max_idle = max_idle
        self._idle: dict[str, list[HTTPConnection]] = {}
        self._chosen: tuple[ProxyURL | None] | None = None  # the route, once one worked
        self._route_chosen = trio.Event()
        self._ahead = trio.CancelScope()  # connections opened ahead; cancelled at aclose
        self._closed = False

    @property
    def via(self) -> str:
        """How requests travel, for messages: ``DIRECT`` or the proxy."""
        if self._chosen is None:
            return "(no connection yet)"
        route = self._chosen[0]
        return "DIRECT" if route is None else route.redacted()

    async def request(
        self,
        method: str,
        resource: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        phase: str,
        within: float,
        max_body: int = 1024 * 1024,
        clock: PhaseClock | None = None,
        trace_heads: bool = True,
        lane: str = "",
    ) -> Response:
        """One request and its whole answer, within ``within`` seconds
        (connecting spends the route's ``connect_timeout`` besides, unless
        ``clock`` bounds both)."""
        async with self.stream(
            method,
            resource,
            headers=headers,
            body=body,
            phase=phase,
            within=within,
            clock=clock,
            trace_heads=trace_heads,
            lane=lane,
        ) as response:
            content = await response.read(max_body, within)
        return Response(response.status, response.reason, response.headers, content)

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        resource: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        phase: str,
        within: float,
        clock: PhaseClock | None = None,
        trace_heads: bool = True,
        lane: str = "",
    ) -> AsyncIterator[StreamedResponse]:
        """One request; the answer's head must come within ``within``
        seconds (or within ``clock``'s budget, which then also bounds
        connecting), its body is read from the :class:`StreamedResponse`.
        The connection is kept for the next request of ``lane`` when the body
        was read to its end, else closed."""
        if self._closed:
            raise trio.ClosedResourceError("the HTTP client is closed")
        target = replace(self.origin, resource=resource)
        connection = await self._checkout(clock, lane)
        try:
            exchange = clock or PhaseClock(within)
            with exchange.phase(phase, f"waiting for the answer to {method} {resource}"):
                connection, head = await send_request(
                    connection,
                    method,
                    target,
                    headers,
                    body,
                    route=self.route,
                    reconnect=lambda: self._connect(clock),
                    trace_heads=trace_heads,
                )
            if not isinstance(head, h11.Response):
                raise HandshakeError(
                    f"{connection.label} answered {method} {resource} with {head.status_code}",
                    status=head.status_code,
                )
            response = StreamedResponse(connection, head, phase)
            yield response
        except BaseException:
            await connection.aclose()
            raise
        if response.complete and connection.finish_exchange() and self._keep(connection, lane):
            return
        await connection.aclose()

    async def aclose(self) -> None:
        self._closed = True
        self._ahead.cancel()
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                await connection.aclose()

    def _keep(self, connection: HTTPConnection, lane: str) -> bool:
        kept = self._idle.setdefault(lane, [])
        if self._closed or len(kept) >= self.max_idle:
            return False
        kept.append(connection)
        return True

    async def _checkout(self, clock: PhaseClock | None, lane: str) -> HTTPConnection:
        kept = self._idle.get(lane, [])
        while kept:
            connection = kept.pop()
            if connection.idle:
                return connection  # sending the request is the checkpoint
            await connection.aclose()  # pragma: no cover - only idle ones are kept
        return await self._connect(clock)

    async def open_ahead(self, lane: str, within: float) -> None:
        """Once a request has chosen the route, open a connection for the
        next request of ``lane`` (while that request's answer is awaited),
        and keep it. Best effort: a failure here is the request's to report
        when it connects itself."""
        with self._ahead, trio.move_on_after(within):
            await self._route_chosen.wait()
            try:
                connection = await self._connect(PhaseClock(within))
            except (TunnelError, OSError, trio.BrokenResourceError):
                return
            connection.opened_ahead = True
            if not self._keep(connection, lane):
                await connection.aclose()

    async def _connect(self, clock: PhaseClock | None = None) -> HTTPConnection:
        clock = clock or PhaseClock(self.route.connect_timeout)
        if self._chosen is not None:
            # The route is traced once; later connections only on error.
            quiet = replace(self.route, trace=None)
            return await open_connection(self._chosen[0], self.origin, quiet, clock)
        connection, route = await open_along_route(
            self.origin,
            self.route,
            clock,
            lambda route: open_connection(route, self.origin, self.route, clock),
        )
        self._chosen = (route,)
        self._route_chosen.set()
        return connection
