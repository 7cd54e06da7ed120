"""A Server-Sent Events client (the browser's ``EventSource``) for trio.

The stream reaches the origin along the same path as a WebSocket (direct or
through the CONNECT tunnel the route picks, TLS end to end for ``https://``),
then speaks plain HTTP/1.1 with h11. Parsing is left to the pure
:mod:`tunnelws._sse`; this module moves bytes, applies timeouts and runs the
reconnection rules of the WHATWG standard:

* a dropped connection (end of body, reset, read timeout) is re-established
  after the reconnection delay (the server's ``retry``, 3 s by default),
  sending ``Last-Event-ID`` when the last event ID is non-empty;
* ``204 No Content`` ends the stream for good without an error;
* any other status than 200, or a ``Content-Type`` other than
  ``text/event-stream``, fails with :class:`~tunnelws.HandshakeError` and is
  never retried.

Reading is pull-based: bytes are only read while the consumer iterates, so a
slow consumer applies TCP back-pressure and no background task is needed.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager, nullcontext
from typing import TYPE_CHECKING
from urllib.parse import quote

import h11
import trio

from ._errors import (
    MAX_KEPT_BODY,
    ConnectionLostError,
    DirectConnectError,
    HandshakeError,
    PhaseTimeoutError,
    ProxyConnectError,
    TunnelError,
)
from ._route_options import RouteKeywords, RouteOptions, route_options
from ._sse import DEFAULT_MAX_EVENT_SIZE, EventStreamParser, EventTooLargeError, ServerSentEvent
from ._target import Target, parse_target
from ._timeouts import PhaseClock
from ._trace import Trace, trace_head
from ._version import USER_AGENT

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["DEFAULT_RECONNECT_DELAY", "EventStream", "ReadyState", "open_event_stream"]

DEFAULT_RECONNECT_DELAY = 3.0
RECEIVE_SIZE = 65536
# How long a refused response may take to deliver the start of its body,
# which is kept on the HandshakeError for diagnosis.
ERROR_BODY_TIMEOUT = 1.0

# Opens a byte stream to the target (TLS done when the target is secure).
StreamOpener = Callable[[Target], Awaitable[trio.abc.Stream]]

# Failures worth another attempt when reconnecting: the network or the server
# may come back. Configuration, authentication, TLS and HTTP refusals will not
# fix themselves, so they end the stream.
_TRANSIENT = (DirectConnectError, ProxyConnectError, PhaseTimeoutError, ConnectionLostError)

# Left as they are on the request line (so existing %XX escapes survive).
_PRINTABLE_ASCII = "".join(chr(c) for c in range(0x21, 0x7F))

# Header values h11 (rightly) refuses to send.
_FORBIDDEN_IN_HEADER = frozenset(chr(c) for c in [*range(0x20), 0x7F]) - {"\t"}


class ReadyState(enum.IntEnum):
    """The browser ``EventSource.readyState`` values."""

    CONNECTING = 0
    OPEN = 1
    CLOSED = 2


class _Connection:
    """One HTTP exchange: the stream and its h11 state."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.http = h11.Connection(our_role=h11.CLIENT)
        self.eof = False

    async def send(self, event: h11.Request | h11.EndOfMessage) -> None:
        data = self.http.send(event)
        if data:
            await self.stream.send_all(data)

    async def next_event(self) -> h11.Event | None:
        """The next h11 event (``None`` if h11 paused us), reading from the
        stream as needed; EOF is reported to h11, which turns it into
        ``ConnectionClosed`` or an error."""
        while True:
            event = self.http.next_event()
            if isinstance(event, h11.Event):
                return event
            if event is h11.PAUSED:
                return None
            data = bytes(await self.stream.receive_some(RECEIVE_SIZE))
            self.eof = not data
            self.http.receive_data(data)

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


class EventStream:
    """An open event stream: iterate it to receive :class:`ServerSentEvent`.

    Created by :func:`open_event_stream`. Iteration ends when the server
    answers a reconnection with 204, or when the connection closes and no
    more reconnections are allowed. Besides the events, it exposes what the
    browser's ``EventSource`` does: :attr:`ready_state`, :attr:`url` and
    :attr:`last_event_id`, plus the current :attr:`retry` delay and the number
    of :attr:`reconnects` so far.
    """

    def __init__(
        self,
        target: Target,
        *,
        open_stream: StreamOpener,
        headers: Iterable[tuple[str, str]],
        connect_timeout: float,
        reconnect: bool,
        reconnect_delay: float,
        max_reconnects: int | None,
        read_timeout: float | None,
        last_event_id: str,
        max_event_size: int,
        trace: Trace | None,
    ) -> None:
        self._target = target
        self._open_stream = open_stream
        self._headers = list(headers)
        self._connect_timeout = connect_timeout
        self._reconnect = reconnect
        self._reconnect_delay = reconnect_delay
        self._max_reconnects = max_reconnects
        self._read_timeout = read_timeout
        self._trace = trace
        self._parser = EventStreamParser(last_event_id=last_event_id, max_event_size=max_event_size)
        self._pending: deque[ServerSentEvent] = deque()
        self._connection: _Connection | None = None
        self.ready_state = ReadyState.CONNECTING
        #: Reconnection attempts made so far (successful or not).
        self.reconnects = 0

    @property
    def url(self) -> str:
        return self._target.url

    @property
    def last_event_id(self) -> str:
        """The ID a reconnection resumes from (``""``: none)."""
        return self._parser.last_event_id

    @property
    def retry(self) -> float:
        """The reconnection delay in seconds: the server's ``retry`` or the default."""
        if self._parser.retry is None:
            return self._reconnect_delay
        return self._parser.retry / 1000

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> ServerSentEvent:
        while not self._pending:
            if self.ready_state is ReadyState.CLOSED:
                raise StopAsyncIteration
            if self._connection is None:
                await self._reestablish()
            else:
                await self._read_events(self._connection)
        return self._pending.popleft()

    async def aclose(self) -> None:
        """Close the connection; iteration ends. Safe to call twice."""
        self.ready_state = ReadyState.CLOSED
        self._pending.clear()
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await connection.aclose()

    # -- Connecting ------------------------------------------------------------

    async def _connect(self) -> None:
        """Open one connection and check the response head.

        On 200 with the right type the stream is OPEN; on 204 it is CLOSED.
        Anything else raises (the caller decides what state that leaves).
        """
        self.ready_state = ReadyState.CONNECTING
        # One budget for the whole opening, like the WebSocket path: the
        # transport spends it on TCP/CONNECT/TLS, the response head gets the rest.
        clock = PhaseClock(self._connect_timeout)
        connection = _Connection(await self._open_stream(self._target))
        try:
            with clock.phase("websocket", f"waiting for the event stream response from {self.url}"):
                response = await self._exchange_head(connection)
            if response.status_code == 204:
                if self._trace:
                    self._trace("* 204 No Content: the server ended the stream")
                await connection.aclose()
                self.ready_state = ReadyState.CLOSED
                return
            problem = _refusal_reason(response, self.url)
            if problem is not None:
                # The body is kept for diagnosis: often a proxy's login page.
                raise HandshakeError(
                    problem,
                    status=response.status_code,
                    headers=_decode_headers(response.headers),
                    body=await _read_some_body(connection),
                )
        except BaseException:
            await connection.aclose()
            raise
        self._connection = connection
        self.ready_state = ReadyState.OPEN
        if self._trace:
            self._trace(f"* Event stream open: {self.url}")

    async def _exchange_head(self, connection: _Connection) -> h11.Response:
        target = self._target
        headers = _request_headers(target, self._headers, self.last_event_id)
        if self._trace and self.last_event_id and not _sendable(self.last_event_id):
            self._trace("* Last event ID has control characters: not sent")
        trace_head(self._trace, ">", f"GET {target.resource} HTTP/1.1", headers)
        try:
            await connection.send(
                h11.Request(method="GET", target=_request_target(target.resource), headers=headers)
            )
            await connection.send(h11.EndOfMessage())
            while True:
                event = await connection.next_event()
                if isinstance(event, h11.Response):
                    trace_head(
                        self._trace,
                        "<",
                        f"HTTP/{event.http_version.decode()} {event.status_code} "
                        f"{event.reason.decode('latin-1')}",
                        _decode_headers(event.headers),
                    )
                    return event
                if event is None or isinstance(event, h11.ConnectionClosed):
                    raise self._closed_before_answer()
                # Informational 1xx responses are skipped, as fetch does.
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionLostError(
                f"the connection to {self.url} broke before the response: {exc.__cause__ or exc}"
            ) from exc
        except h11.RemoteProtocolError as exc:
            if connection.eof:
                raise self._closed_before_answer() from exc
            raise HandshakeError(f"malformed HTTP response from {self.url}: {exc}") from exc

    def _closed_before_answer(self) -> ConnectionLostError:
        return ConnectionLostError(f"{self.url} closed the connection before answering the request")

    async def _reestablish(self) -> None:
        """Wait the reconnection delay and reconnect, retrying transient
        failures while the reconnection budget lasts."""
        while True:
            self.reconnects += 1
            delay = self.retry
            if self._trace:
                resume = f" with Last-Event-ID: {self.last_event_id}" if self.last_event_id else ""
                self._trace(f"* Reconnecting in {delay:g} s (attempt {self.reconnects}){resume}")
            await trio.sleep(delay)
            try:
                await self._connect()
                return
            except _TRANSIENT as exc:
                if self._trace:
                    self._trace(f"* Reconnection failed: {exc}")
                if not self._may_reconnect():
                    self.ready_state = ReadyState.CLOSED
                    raise
            except BaseException:
                self.ready_state = ReadyState.CLOSED
                raise

    def _may_reconnect(self) -> bool:
        return self._reconnect and (
            self._max_reconnects is None or self.reconnects < self._max_reconnects
        )

    # -- Reading ---------------------------------------------------------------

    async def _read_events(self, connection: _Connection) -> None:
        """Read until at least one chunk of body arrived or the connection ended."""
        read_timeout = self._read_timeout
        try:
            with trio.fail_after(read_timeout) if read_timeout is not None else nullcontext():
                data = await _next_body_chunk(connection)
        except trio.ClosedResourceError:
            if self.ready_state is ReadyState.CLOSED:
                return  # aclose() from another task: the iteration just ends
            raise
        except trio.TooSlowError:
            await self._connection_lost(
                PhaseTimeoutError(
                    f"no data from {self.url} for {read_timeout:g} s",
                    phase="connected",
                    timeout=read_timeout or 0.0,
                )
            )
            return
        except (trio.BrokenResourceError, h11.RemoteProtocolError) as exc:
            await self._connection_lost(
                ConnectionLostError(f"the connection to {self.url} broke: {exc.__cause__ or exc}")
            )
            return
        if data is None:
            await self._connection_lost(None)
            return
        retry_before = self._parser.retry
        try:
            self._pending.extend(self._parser.feed(data))
        except EventTooLargeError as exc:
            # The stream cannot be resynchronised, and reconnecting would
            # only fetch the same event again.
            await self.aclose()
            raise ConnectionLostError(
                f"{self.url} sent a line or event larger than {exc.limit} characters; "
                "connection closed",
                reason="event too large",
            ) from exc
        if self._trace and self._parser.retry != retry_before:
            self._trace(f"* Server set the reconnection delay to {self._parser.retry} ms")

    async def _connection_lost(self, error: TunnelError | None) -> None:
        """The connection ended: reconnect later if allowed; otherwise end the
        iteration (clean end of body) or raise ``error``."""
        if self._connection is not None:
            await self._connection.aclose()
            self._connection = None
        self._parser.feed_eof()
        if self._trace:
            self._trace(
                f"* Connection closed: {error}" if error else "* Connection closed by the server"
            )
        if self._may_reconnect():
            self.ready_state = ReadyState.CONNECTING
            return
        self.ready_state = ReadyState.CLOSED
        if error is not None:
            raise error


def _refusal_reason(response: h11.Response, url: str) -> str | None:
    """Why this response is not a usable event stream (``None``: it is)."""
    if response.status_code != 200:
        reason = response.reason.decode("latin-1")
        return f"event stream refused by {url}: {response.status_code} {reason}"
    content_type = _header(response.headers, b"content-type")
    if _mime_type(content_type) != "text/event-stream":
        shown = repr(content_type) if content_type is not None else "none"
        return f"{url} is not an event stream: Content-Type {shown}, expected text/event-stream"
    return None


async def _next_body_chunk(connection: _Connection) -> bytes | None:
    """The next piece of the response body, or ``None`` when it ended."""
    while True:
        event = await connection.next_event()
        if isinstance(event, h11.Data):
            if event.data:
                return bytes(event.data)
        elif event is None or isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            # (A client is only paused after the response ends.)
            return None


async def _read_some_body(connection: _Connection) -> bytes:
    """The first bytes of an error response's body, briefly and best effort."""
    body = b""
    with trio.move_on_after(ERROR_BODY_TIMEOUT):
        try:
            while len(body) < MAX_KEPT_BODY:
                chunk = await _next_body_chunk(connection)
                if chunk is None:
                    break
                body += chunk
        except (trio.BrokenResourceError, h11.RemoteProtocolError):
            pass
    return body[:MAX_KEPT_BODY]


def _request_headers(
    target: Target, extra: list[tuple[str, str]], last_event_id: str
) -> list[tuple[str, str]]:
    """The GET's headers; the caller's replace defaults of the same name."""
    defaults = [
        ("Host", target.host_header),
        ("User-Agent", USER_AGENT),
        ("Accept", "text/event-stream"),
        ("Cache-Control", "no-cache"),
    ]
    if last_event_id and _sendable(last_event_id):
        defaults.append(("Last-Event-ID", last_event_id))
    overridden = {name.lower() for name, _ in extra}
    return [(n, v) for n, v in defaults if n.lower() not in overridden] + extra


def _request_target(resource: str) -> bytes:
    """The resource as it goes on the request line: non-ASCII characters and
    spaces percent-encoded (as browsers do), everything else untouched."""
    return quote(resource, safe=_PRINTABLE_ASCII).encode("ascii")


def _sendable(value: str) -> bool:
    return not _FORBIDDEN_IN_HEADER.intersection(value)


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:  # h11 lower-cases names
            return value.decode("latin-1")
    return None


def _mime_type(content_type: str | None) -> str | None:
    if content_type is None:
        return None
    return content_type.split(";", 1)[0].strip().lower()


def _decode_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]


@asynccontextmanager
async def open_event_stream(
    url: str,
    *,
    route: RouteOptions | None = None,
    headers: Iterable[tuple[str, str]] = (),
    reconnect: bool = True,
    reconnect_delay: float = DEFAULT_RECONNECT_DELAY,
    last_event_id: str | None = None,
    max_reconnects: int | None = None,
    read_timeout: float | None = None,
    max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
    _open_stream: StreamOpener | None = None,
    **route_keywords: Unpack[RouteKeywords],
) -> AsyncIterator[EventStream]:
    """Connect to an ``http://`` or ``https://`` event stream and yield an
    :class:`EventStream` to iterate.

    The first connection is made on entry, and its failure raises there (a
    typed :class:`~tunnelws.TunnelError`; no retry, so a wrong proxy or URL
    shows at once). After that, a dropped connection is re-established after
    the server's ``retry`` delay (``reconnect_delay`` until the server sends
    one), at most ``max_reconnects`` times (``None``: no limit); pass
    ``reconnect=False`` to end the iteration when the connection closes.
    ``last_event_id`` resumes a stream a previous run was reading.
    ``read_timeout`` treats that many seconds without a byte (comments
    count) as a dropped connection. ``route`` and the route keywords
    (``proxy``, ``ssl_context``, ``connect_timeout``: one budget for the whole
    opening, response head included, ...) mean what they mean for the
    WebSocket client.
    """
    options = route_options(route, **route_keywords)
    connect_timeout = options.connect_timeout
    target = parse_target(url)
    if target.scheme not in ("http", "https"):
        raise ValueError(f"an event stream URL must be http:// or https://, not {url!r}")
    if connect_timeout <= 0:
        raise ValueError(f"connect_timeout must be positive, not {connect_timeout!r}")
    if read_timeout is not None and read_timeout <= 0:
        raise ValueError(f"read_timeout must be positive, not {read_timeout!r}")
    if reconnect_delay < 0:
        raise ValueError(f"reconnect_delay must not be negative, not {reconnect_delay!r}")
    if max_reconnects is not None and max_reconnects < 0:
        raise ValueError(f"max_reconnects must not be negative, not {max_reconnects!r}")

    if _open_stream is None:

        async def open_origin(target: Target) -> trio.abc.Stream:
            # Imported here: the transport pulls in the whole proxy stack.
            from ._transport import open_origin_stream

            return await open_origin_stream(target, options)

        _open_stream = open_origin

    events = EventStream(
        target,
        open_stream=_open_stream,
        headers=headers,
        connect_timeout=connect_timeout,
        reconnect=reconnect,
        reconnect_delay=reconnect_delay,
        max_reconnects=max_reconnects,
        read_timeout=read_timeout,
        last_event_id=last_event_id or "",
        max_event_size=max_event_size,
        trace=options.trace,
    )
    try:
        await events._connect()
        yield events
    finally:
        await events.aclose()
