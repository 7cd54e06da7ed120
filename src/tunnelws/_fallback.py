"""The HTTP fallback's client: one WebSocket carried by ordinary requests.

The protocol is ``docs/fallback-protocol.md``; its wire format and delivery
windows are :mod:`tunnelws._fallback_wire`, the requests travel along the
route with :mod:`tunnelws._http_client`. This module runs the session:

* **open**: ``POST .../open`` within the connect budget; then three tasks;
* **downstream**: ``GET .../down`` answered by a streamed response (SSE), one
  after another (the server ends each after a size or time cap, and after
  ``end`` the next one starts at once). No byte of the first streamed
  response within ``min(heartbeat, 3 s)`` means something buffers
  responses: the session switches to long-polling (``?mode=poll``). Every
  request carries ``Last-Event-ID``: the highest message the application has
  taken. Messages are queued as they arrive (the server's window bounds how
  many: it sends no more than ``window`` unacknowledged ones), so the
  downstream never stalls behind a slow reader and heartbeats keep flowing;
* **upstream**: one ``POST .../up`` at a time, batching every message not yet
  acknowledged (up to ``max_batch_bytes``) with the downstream ack; a
  lower ``ack`` in the answer is the server's backpressure (the rest goes
  again after its next ``ack`` event or a short delay); a pure ack when half
  the window is unacknowledged or a second after the first message taken;
* **watchdog**: a session the server has not answered for ``expires``
  seconds is lost (1006).

A request that fails on the way (reset, truncated body, timeout, ``5xx``) is
retried with backoff (0.1 s doubling to 2 s); the windows make that safe.
``404`` (the session is gone), a gap, or a malformed answer end the session at
once with :class:`~tunnelws.ConnectionLostError`. :meth:`FallbackSession.send`
blocks while ``window`` messages are unacknowledged, so memory stays bounded.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Awaitable, Callable

import trio

from ._connection import FallbackMode, ReadyState, wait_while_talking
from ._errors import (
    ConnectionClosed,
    ConnectionLostError,
    DirectConnectError,
    HandshakeError,
    PhaseTimeoutError,
    ProxyConnectError,
    ProxyProtocolError,
    TunnelError,
)
from ._fallback_wire import (
    UPSTREAM_OVERHEAD,
    Ack,
    End,
    FallbackMessage,
    FallbackProtocolError,
    Heartbeat,
    MessageKind,
    OpenAnswer,
    OpenRequest,
    ReceiveWindow,
    SendWindow,
    decode_down_event,
    decode_error,
    decode_open_answer,
    decode_up_answer,
    encode_message_json,
    encode_open_request,
    encode_upstream_within,
    fallback_path,
)
from ._http_client import ExchangeBroken, HTTPClient, Response, StreamedResponse
from ._route_options import HeaderList, RouteOptions
from ._sse import EventStreamParser, EventTooLargeError
from ._target import Target
from ._timeouts import PhaseClock
from ._trace import Trace

__all__ = ["FallbackSession", "open_fallback"]

#: Buffering detection: the first streamed response must show a byte this
#: soon (or within the heartbeat interval, if shorter).
DETECT_BUFFERING = 3.0
#: Each request's answer (head, and for upstream its body) must come this
#: soon; a long-poll gets ``poll_timeout`` on top.
REQUEST_TIMEOUT = 10.0
BACKOFF_START = 0.1
BACKOFF_MAX = 2.0
#: A pure ack goes this long after the first unacknowledged message taken.
PURE_ACK_DELAY = 1.0
#: After a backpressured upstream answer, the rest goes again this soon at
#: the latest (an ``ack`` event sends it sooner).
BACKPRESSURE_DELAY = 0.25
#: Conflict answers (409) in a row before the session is given up: one may
#: be an abandoned request still open at the server, more are a gap.
MAX_CONFLICTS = 3
MAX_ANSWER_BYTES = 64 * 1024
#: Opens tried when the answer is cut short on the way (a reset, not a refusal).
OPEN_ATTEMPTS = 3
_JSON = ("Content-Type", "application/json")
# Kept-alive connections: one for the upstream POSTs, one for the downstream
# requests, so neither waits for (or takes) the other's.
UP, DOWN = "up", "down"
# Statuses worth another try: the path (or the server) may recover.
_TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Headers of the protocol's own requests (or of the hop), which the
# application's extra headers may not replace.
_OWN_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "upgrade",
        "te",
        "trailer",
        "keep-alive",
        "accept",
        "cache-control",
        "last-event-id",
        "proxy-authorization",
        "proxy-connection",
    }
)
_TRANSIENT_ERRORS = (
    ConnectionLostError,  # ExchangeBroken: reset, closed, cut short
    PhaseTimeoutError,
    DirectConnectError,
    ProxyConnectError,
    ProxyProtocolError,
)


async def open_fallback(
    nursery: trio.Nursery,
    target: Target,
    route: RouteOptions,
    *,
    subprotocols: tuple[str, ...] = (),
    extra_headers: HeaderList = (),
    close_timeout: float = 5.0,
    max_message_size: int = 16 * 1024 * 1024,
) -> FallbackSession:
    """Open a fallback session for the WebSocket URL ``target`` and start
    its tasks in ``nursery``. Everything up to the server's answer happens
    within ``route.connect_timeout``; a server that offers no fallback, or
    answers something unusable, raises :class:`~tunnelws.HandshakeError`."""
    origin = Target("https" if target.secure else "http", target.host, target.port, "/")
    client = HTTPClient(origin, route)
    path = fallback_path(target.resource, "open")
    request = OpenRequest(tuple(subprotocols), tuple(extra_headers))
    # The body carries them for the session (as the upgrade would have); on
    # every request too, for whatever checks requests on the way (cookies,
    # an authenticating reverse proxy) and for the server's Origin and Cookie.
    own = [
        (name, value)
        for name, value in extra_headers
        if name.lower() not in _OWN_HEADERS and not name.lower().startswith("sec-websocket-")
    ]
    clock = PhaseClock(route.connect_timeout)
    backoff = _Backoff()
    attempts = 0
    # The downstream request follows the open at once, on a connection of
    # its own: open that while the open's answer is awaited.
    nursery.start_soon(client.open_ahead, DOWN, route.connect_timeout)
    try:
        while True:
            try:
                response = await client.request(
                    "POST",
                    path,
                    headers=[
                        _JSON,
                        ("Accept", "application/json"),
                        ("Cache-Control", "no-store"),
                        *own,
                    ],
                    body=encode_open_request(request),
                    phase="websocket",
                    within=route.connect_timeout,
                    clock=clock,
                    max_body=MAX_ANSWER_BYTES,
                    lane=UP,  # the first upstream POST follows on its connection
                )
                break
            except ExchangeBroken as exc:
                # An answer cut short on the way: open again (a session the
                # server did open expires unused), within the same budget.
                attempts += 1
                if attempts >= OPEN_ATTEMPTS:
                    raise
                if route.trace:
                    route.trace(f"* HTTP fallback open failed ({exc}); again")
                with clock.phase("websocket", "opening the HTTP fallback session"):
                    await trio.sleep(backoff.next())
        answer = _read_open_answer(response, target, subprotocols, via=client.via)
    except BaseException:
        await client.aclose()
        raise
    session = FallbackSession(
        client,
        target,
        answer,
        headers=own,
        close_timeout=close_timeout,
        max_message_size=max_message_size,
        trace=route.trace,
    )
    if route.trace:
        limits = answer.limits
        route.trace(
            f"* HTTP fallback session open via {client.via}: heartbeat {limits.heartbeat:g} s,"
            f" window {limits.window}, expires {limits.expires:g} s"
        )
    nursery.start_soon(session._run)
    return session


def _read_open_answer(
    response: Response, target: Target, subprotocols: tuple[str, ...], *, via: str
) -> OpenAnswer:
    url = f"{'https' if target.secure else 'http'}://{target.host_header}"
    where = f"{url}{fallback_path(target.resource, 'open')}"
    if response.status == 201:
        try:
            answer = decode_open_answer(response.body)
        except FallbackProtocolError as exc:
            raise HandshakeError(
                f"the HTTP fallback's open answer from {where} is unusable: {exc}",
                status=201,
                headers=response.headers,
                body=response.body,
            ) from None
        if answer.subprotocol is not None and answer.subprotocol not in subprotocols:
            raise HandshakeError(
                f"the HTTP fallback chose subprotocol {answer.subprotocol!r},"
                " which was not offered",
                status=201,
                headers=response.headers,
            )
        return answer
    error, backend_status = decode_error(response.body)
    if response.status == 404:
        message = f"{target.host_header} offers no HTTP fallback (404 to POST {where})"
    elif response.status == 502 and backend_status is not None:
        message = f"the fallback's backend refused the WebSocket: {backend_status}" + (
            f" ({error})" if error else ""
        )
    else:
        message = f"the HTTP fallback open was answered {response.status} {response.reason}"
        if error:
            message += f": {error}"
    if via != "DIRECT" and response.status in (403, 405, 501):
        message += f" (from the origin or the proxy {via})"
    return _raise(
        HandshakeError(
            message, status=response.status, headers=response.headers, body=response.body
        )
    )


def _raise(error: TunnelError) -> OpenAnswer:
    raise error


class _Backoff:
    def __init__(self) -> None:
        self.delay = BACKOFF_START

    def next(self) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, BACKOFF_MAX)
        return delay

    def reset(self) -> None:
        self.delay = BACKOFF_START


class _Retry(Exception):
    """A request failed in a way worth another try."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class _Fatal(Exception):
    """An answer that ends the session (404, a malformed answer, a gap)."""

    def __init__(self, why: str, code: int = 1006) -> None:
        super().__init__(why)
        self.why = why
        self.code = code


class FallbackSession:
    """A fallback session: what carries a :class:`~tunnelws.WebSocketConnection`
    (see :class:`~tunnelws._connection.Transport`) when the WebSocket could not
    pass. Created by :func:`open_fallback`."""

    def __init__(
        self,
        client: HTTPClient,
        target: Target,
        answer: OpenAnswer,
        *,
        headers: HeaderList = (),
        close_timeout: float,
        max_message_size: int,
        trace: Trace | None,
    ) -> None:
        self.url = target.url
        self.subprotocol = answer.subprotocol
        self.extensions = ""  # no permessage-deflate over the fallback
        self.response_headers: list[tuple[str, str]] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self.session_id = answer.session
        self.limits = answer.limits
        self.mode: FallbackMode = "streaming"
        #: Set once the downstream mode is settled (a streamed byte came, or
        #: the session switched to long-polling).
        self.mode_settled = trio.Event()
        self._client = client
        self._headers = list(headers)  # the application's, on every request
        self._trace = trace
        self._close_timeout = close_timeout
        self._max_message_size = max_message_size
        self._request_timeout = min(REQUEST_TIMEOUT, self.limits.expires)
        self._down_path = fallback_path(target.resource, "down", answer.session)
        self._up_path = fallback_path(target.resource, "up", answer.session)
        self._state = ReadyState.OPEN
        self._ending: ConnectionClosed | None = None
        self._closed = trio.Event()
        self._tasks: trio.CancelScope | None = None
        now = trio.current_time()
        self._last_answer = now  # the server's last sign of life
        # Upstream: messages sent, their JSON, what went in answered POSTs.
        self._send = SendWindow(self.limits.window)
        self._encoded: dict[int, bytes] = {}
        self._buffered = 0
        self._posted = 0
        self._resend_at = 0.0
        self._batch_limit = self.limits.max_batch_bytes
        self._space = trio.lowlevel.ParkingLot()
        self._upstream_wake = trio.Event()
        # Downstream: messages queued for the application (with their seq),
        # the highest taken (our ack) and the highest the server was told.
        self._recv = ReceiveWindow()
        self._messages: deque[tuple[int, str | bytes]] = deque()
        self._receivers = trio.lowlevel.ParkingLot()
        self._ack = 0
        self._ack_told = 0
        self._ack_pending_since: float | None = None
        self._our_close: int | None = None  # seq of our close message
        self._their_close: int | None = None  # seq of the server's

    def __repr__(self) -> str:
        return f"<FallbackSession {self.url} {self._state.name} {self.mode}>"

    # -- the Transport interface ---------------------------------------------------

    @property
    def ready_state(self) -> ReadyState:
        return self._state

    @property
    def buffered_amount(self) -> int:
        """Bytes of messages sent and not yet acknowledged by the server."""
        return self._buffered

    @property
    def downstream_mode(self) -> FallbackMode:
        return self.mode

    async def send(self, message: str | bytes) -> None:
        if not isinstance(message, (str, bytes, bytearray, memoryview)):
            raise TypeError(f"message must be str or bytes, not {type(message).__name__}")
        if self._state is not ReadyState.OPEN:
            raise self._closed_error()
        data: str | bytes = message if isinstance(message, str) else bytes(message)
        while self._send.full:
            await self._space.park()
            if self._state is not ReadyState.OPEN:
                raise self._closed_error()
        seq = self._send.last_seq + 1
        kind: MessageKind = "text" if isinstance(data, str) else "binary"
        encoded = encode_message_json(FallbackMessage(seq, kind, data))
        if len(encoded) + UPSTREAM_OVERHEAD > self.limits.max_batch_bytes:
            raise ValueError(
                f"a message of {len(data)} {'characters' if kind == 'text' else 'bytes'}"
                f" is {len(encoded)} bytes on the HTTP fallback's wire; this server takes"
                f" at most {self.limits.max_batch_bytes} bytes per request"
            )
        self._push(kind, data, encoded)
        await trio.lowlevel.checkpoint()

    async def receive(self) -> str | bytes:
        while not self._messages:
            if self._ending is not None:
                raise self._ending
            await self._receivers.park()
        seq, message = self._messages.popleft()
        self._ack = max(self._ack, seq)
        if self._ack_pending_since is None:
            self._ack_pending_since = trio.current_time()
            self._wake_upstream()
        elif self._ack - self._ack_told >= self._half_window:
            self._wake_upstream()
        return message

    async def ping(self, payload: bytes = b"") -> None:
        del payload  # no pings in the fallback: heartbeats keep it alive
        if self._state is not ReadyState.OPEN:
            raise self._closed_error()
        await trio.lowlevel.checkpoint()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._state is ReadyState.OPEN:
            if len(reason.encode()) > 123:
                raise ValueError("a close reason must be at most 123 bytes of UTF-8")
            self._state = ReadyState.CLOSING
            self._our_close = self._push_close(code, reason)
        self._last_answer = max(self._last_answer, trio.current_time())
        if not await wait_while_talking(
            self._closed, lambda: self._last_answer, self._close_timeout
        ):
            silence = f"{self._close_timeout:g} s"
            self._lose(f"no closing handshake and no answer from the server for {silence}")

    async def finish(self, *, failed: bool) -> None:
        """Leaving ``open_websocket``: close politely, or abort if it failed."""
        if self._ending is not None:
            return
        if failed:
            with trio.CancelScope(shield=True), trio.move_on_after(0.5):
                await self.close(1011, "client error")
            self._lose("closed after an error in the client")
            return
        await self.close()

    # -- sending ---------------------------------------------------------------------

    def _push(self, kind: MessageKind, data: str | bytes, encoded: bytes) -> None:
        message = self._send.push(kind, data)
        self._encoded[message.seq] = encoded
        self._buffered += message.size
        self._wake_upstream()

    def _push_close(self, code: int | None, reason: str) -> int:
        # A close may exceed the window by one: it must go whatever the state.
        message = self._send.push("close", reason, code)
        self._encoded[message.seq] = encode_message_json(message)
        self._wake_upstream()
        return message.seq

    def _on_upstream_ack(self, seq: int) -> None:
        """The server has taken upstream messages up to ``seq``."""
        if seq <= self._send.acked:
            return
        for message in self._send.unacked():
            if message.seq > seq:
                break
            self._buffered -= message.size if message.kind != "close" else 0
            self._encoded.pop(message.seq, None)
        self._send.ack(seq)  # raises FallbackProtocolError beyond what was sent
        self._space.unpark_all()
        self._maybe_done()

    def _wake_upstream(self) -> None:
        self._upstream_wake.set()

    @property
    def _half_window(self) -> int:
        return max(1, self.limits.window // 2)

    def _upstream_due(self, now: float) -> tuple[bool, float]:
        """Whether to POST now; else when to look again (inf: when woken)."""
        unacked = self._send.last_seq > self._send.acked
        if unacked and (self._send.last_seq > self._posted or now >= self._resend_at):
            return True, now
        wake = self._resend_at if unacked else math.inf
        if self._ack > self._ack_told:
            if self._their_close is not None or self._ack - self._ack_told >= self._half_window:
                return True, now
            since = self._ack_pending_since if self._ack_pending_since is not None else now
            if now >= since + PURE_ACK_DELAY:
                return True, now
            wake = min(wake, since + PURE_ACK_DELAY)
        return False, wake

    async def _upstream(self) -> None:
        backoff = _Backoff()
        conflicts = 0
        while True:
            now = trio.current_time()
            due, wake = self._upstream_due(now)
            if not due:
                self._upstream_wake = trio.Event()
                with trio.move_on_at(wake):
                    await self._upstream_wake.wait()
                continue
            await self._gather()
            ack = self._ack
            pending = list(self._send.unacked())
            body, count = encode_upstream_within(
                ack, (self._encoded[m.seq] for m in pending), self._batch_limit
            )
            try:
                answer = await self._post_up(body, count)
            except _Retry as retry:
                if retry.why == "conflict":
                    conflicts += 1
                    if conflicts > MAX_CONFLICTS:
                        raise _Fatal(
                            "the server answered 409 (conflict) again and again: messages"
                            " were lost on the way",
                            1002,
                        ) from None
                self._note_retry("upstream", retry.why, backoff)
                await trio.sleep(backoff.next())
                continue
            backoff.reset()
            conflicts = 0
            self._seen_answer()
            self._ack_told = max(self._ack_told, ack)
            if self._ack_told >= self._ack:
                self._ack_pending_since = None
            if count:
                last = pending[count - 1].seq
                self._posted = max(self._posted, last)
                if answer < last:
                    self._resend_at = trio.current_time() + BACKPRESSURE_DELAY
            self._on_upstream_ack(answer)
            self._maybe_done()

    async def _gather(self) -> None:
        """Let the application finish sending what it sends in this
        scheduler pass (a loop of ``send`` calls, other tasks), so that it
        goes in one POST: a pass costs microseconds, a POST a round trip."""
        quiet = 0
        for _ in range(self.limits.window):
            last = self._send.last_seq
            await trio.lowlevel.checkpoint()
            # Two passes: trio runs a pass's tasks in random order, so the
            # sender may run after us in one pass and before us in the next.
            quiet = quiet + 1 if self._send.last_seq == last else 0
            if quiet == 2:
                return

    async def _post_up(self, body: bytes, count: int) -> int:
        try:
            response = await self._client.request(
                "POST",
                self._up_path,
                headers=[_JSON, *self._headers],
                body=body,
                phase="connected",
                within=self._request_timeout,
                max_body=MAX_ANSWER_BYTES,
                trace_heads=False,
                lane=UP,
            )
        except _TRANSIENT_ERRORS as exc:
            raise _Retry(str(exc)) from None
        except HandshakeError as exc:  # not HTTP, or an oversized answer
            raise _Fatal(f"malformed answer to an upstream request: {exc}", 1002) from None
        except TunnelError as exc:  # TLS, authentication, refusal on a new connection
            raise _Fatal(f"cannot send upstream: {exc.category}: {exc}") from None
        status = response.status
        if status == 200:
            try:
                return decode_up_answer(response.body)
            except FallbackProtocolError as exc:
                raise _Fatal(f"malformed answer to an upstream request: {exc}", 1002) from None
        if status == 409:
            raise _Retry("conflict")
        if status == 413 and count > 1:
            # Something on the path caps request bodies below the server's limit.
            self._batch_limit = max(len(body) // 2, 1)
            raise _Retry(f"413: batches now at most {self._batch_limit} bytes")
        self._answer_status(response.status, response.reason, response.body, "upstream")
        raise AssertionError("unreachable")  # pragma: no cover

    def _answer_status(self, status: int, reason: str, body: bytes, what: str) -> None:
        """Turn a status that is not the expected one into retry or end."""
        error, _ = decode_error(body)
        detail = f"{status} {reason}".strip() + (f" ({error})" if error else "")
        if status in _TRANSIENT_STATUSES:
            raise _Retry(detail)
        if status == 404:
            raise _Fatal(f"the server no longer knows the session (expired or restarted): {detail}")
        raise _Fatal(f"the {what} request was answered {detail}", 1002)

    # -- receiving -------------------------------------------------------------------

    async def _downstream(self) -> None:
        backoff = _Backoff()
        while self._their_close is None:
            try:
                await self._one_downstream()
            except _Retry as retry:
                self._note_retry("downstream", retry.why, backoff)
                await trio.sleep(backoff.next())
                continue
            backoff.reset()

    async def _one_downstream(self) -> None:
        """One downstream request, read to its end (or abandoned when it
        shows that responses are buffered)."""
        poll = self.mode == "long-polling"
        detect = not poll and not self.mode_settled.is_set()
        resource = self._down_path + ("?mode=poll" if poll else "")
        headers = [("Accept", "text/event-stream"), ("Cache-Control", "no-cache"), *self._headers]
        ack = self._ack
        if ack:
            headers.append(("Last-Event-ID", str(ack)))
        wait = self._request_timeout + (self.limits.poll_timeout if poll else 0.0)
        idle = wait if poll else 2 * self.limits.heartbeat + 1
        detect_within = min(self.limits.heartbeat, DETECT_BUFFERING)
        with trio.move_on_after(detect_within if detect else math.inf) as detection:
            try:
                async with self._client.stream(
                    "GET",
                    resource,
                    headers=headers,
                    phase="connected",
                    within=wait,
                    trace_heads=detect,
                    lane=DOWN,
                ) as response:
                    self._check_down_head(response)
                    self._seen_answer()
                    self._ack_told = max(self._ack_told, ack)
                    parser = EventStreamParser(max_event_size=6 * self._max_message_size + 4096)
                    while chunk := await response.receive_some(idle):
                        if detection.deadline != math.inf:
                            detection.deadline = math.inf
                            self._settle("streaming", "the first streamed response arrives")
                        if self._feed(parser, chunk):
                            self._seen_answer()
            except _TRANSIENT_ERRORS as exc:
                raise _Retry(str(exc)) from None
            except HandshakeError as exc:
                raise _Fatal(f"malformed downstream answer: {exc}", 1002) from None
            except TunnelError as exc:
                raise _Fatal(f"cannot receive: {exc.category}: {exc}") from None
        if detection.cancelled_caught:
            self._settle(
                "long-polling",
                f"no byte of the streamed response within {detect_within:g} s:"
                " something on the path buffers responses",
            )

    def _check_down_head(self, response: StreamedResponse) -> None:
        if response.status != 200:
            self._answer_status(response.status, response.reason, b"", "downstream")
        content_type = (response.header("content-type") or "").split(";")[0].strip().lower()
        if content_type != "text/event-stream":
            raise _Fatal(
                f"the downstream answer is not an event stream (Content-Type {content_type!r})",
                1002,
            )

    def _feed(self, parser: EventStreamParser, chunk: bytes) -> int:
        """Take the events in ``chunk``; how many there were (complete
        events, not bytes, are the server's sign of life)."""
        try:
            events = parser.feed(chunk)
        except EventTooLargeError:
            raise _Fatal(
                "the server sent an event larger than the message size limit", 1009
            ) from None
        for raw in events:
            try:
                event = decode_down_event(raw, self._max_message_size)
            except FallbackProtocolError as exc:
                raise _Fatal(f"the server broke the fallback protocol: {exc}", 1002) from None
            if event is None or isinstance(event, (Heartbeat, End)):
                continue  # the end of the body follows an End at once
            if isinstance(event, Ack):
                self._take_ack(event.seq)
                continue
            self._take(event)
        return len(events)

    def _take_ack(self, seq: int) -> None:
        try:
            self._on_upstream_ack(seq)
        except FallbackProtocolError as exc:
            raise _Fatal(f"the server broke the fallback protocol: {exc}", 1002) from None
        if self._send.last_seq > self._send.acked:
            self._resend_at = trio.current_time()  # backpressure eased: send the rest now
            self._wake_upstream()

    def _take(self, message: FallbackMessage) -> None:
        try:
            fresh = self._recv.accept(message)
        except FallbackProtocolError as exc:
            raise _Fatal(f"the server broke the fallback protocol: {exc}", 1002) from None
        if not fresh:
            return  # a repeat after a reconnect
        if message.kind == "close":
            self._on_their_close(message)
            return
        if len(self._messages) >= self.limits.window:
            raise _Fatal("the server sent more unacknowledged messages than its window", 1002)
        self._messages.append((message.seq, message.data))
        self._receivers.unpark_all()

    def _on_their_close(self, message: FallbackMessage) -> None:
        self._their_close = message.seq
        self.close_code = message.code
        self.close_reason = str(message.data)
        if self._our_close is None:
            # The server closes first: answer as WebSocket does, same code.
            self._state = ReadyState.CLOSING
            self._our_close = self._push_close(message.code, "")
        # Nothing follows a close: it is taken (and acknowledged) at once.
        self._ack = message.seq
        self._wake_upstream()
        self._maybe_done()

    # -- the session's life ------------------------------------------------------------

    async def _run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._tasks = nursery.cancel_scope
                if self._ending is not None:
                    return
                nursery.start_soon(self._guarded, self._downstream)
                nursery.start_soon(self._guarded, self._upstream)
                nursery.start_soon(self._watchdog)
        finally:
            with trio.CancelScope(shield=True):
                await self._client.aclose()

    async def _guarded(self, task: Callable[[], Awaitable[None]]) -> None:
        try:
            await task()
        except _Fatal as fatal:
            self._lose(fatal.why, code=fatal.code)

    async def _watchdog(self) -> None:
        expires = self.limits.expires
        while True:
            deadline = self._last_answer + expires
            if trio.current_time() >= deadline:
                self._lose(f"the server has not answered for {expires:g} s")
                return
            await trio.sleep_until(deadline)

    def _seen_answer(self) -> None:
        self._last_answer = trio.current_time()

    def _settle(self, mode: FallbackMode, why: str) -> None:
        if self.mode_settled.is_set():
            return
        self.mode = mode
        self.mode_settled.set()
        if self._trace:
            self._trace(f"* HTTP fallback downstream: {mode} ({why})")

    def _note_retry(self, what: str, why: str, backoff: _Backoff) -> None:
        if self._trace:
            self._trace(
                f"* HTTP fallback {what} request failed ({why}); again in {backoff.delay:g} s"
            )

    def _maybe_done(self) -> None:
        """Both closes taken, ours acknowledged, theirs acknowledged: the end."""
        if (
            self._ending is None
            and self._their_close is not None
            and self._our_close is not None
            and self._send.acked >= self._our_close
            and self._ack_told >= self._their_close
        ):
            code = self.close_code if self.close_code is not None else 1005
            self._finish_state(ConnectionClosed(code, self.close_reason))

    def _closed_error(self) -> ConnectionClosed:
        if self._ending is not None:
            return self._ending
        return ConnectionClosed(self.close_code or 1005, "the WebSocket is closing")

    def _lose(self, why: str, *, code: int = 1006) -> None:
        if self._ending is not None:
            return
        self.close_code = code
        self.close_reason = why
        self._finish_state(
            ConnectionLostError(f"WebSocket connection lost: {why}", code=code, reason=why)
        )

    def _finish_state(self, ending: ConnectionClosed) -> None:
        self._ending = ending
        self._state = ReadyState.CLOSED
        self._closed.set()
        self.mode_settled.set()
        self._receivers.unpark_all()
        self._space.unpark_all()
        if self._tasks is not None:
            self._tasks.cancel()
