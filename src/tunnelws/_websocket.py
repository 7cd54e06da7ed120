"""WebSocket over the route: upgrade inside the tunnel, then messages.

wsproto does the protocol; this module does the I/O, the way trio-websocket
does, with three differences that matter behind proxies:

- messages that arrive while the closing handshake runs are still delivered
  (``printf 'a\\nb\\n' | tunnelws connect`` must print both echoes);
- a server or proxy that closes during the handshake gives a typed error at
  once, not a wait for the timeout;
- errors are single exceptions from the tunnelws taxonomy, never exception
  groups from a background task.
"""

from __future__ import annotations

import enum
import os
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from ._errors import ConnectionClosed, ConnectionLostError, HandshakeError
from ._frames import OPCODE_BINARY, OPCODE_TEXT, data_frame
from ._route_options import HeaderList, RouteKeywords, RouteOptions, route_options
from ._target import Target, parse_target
from ._timeouts import PhaseClock
from ._trace import Trace, trace_head
from ._transport import connect_origin

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["ReadyState", "WebSocketConnection", "open_websocket"]

RECEIVE_SIZE = 65536
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
# Keepalive pings by default, every 20 s like python-websockets: below the idle
# limits of common proxies and NATs (None turns them off).
DEFAULT_PING_INTERVAL = 20.0
NORMAL_CLOSE_CODES = frozenset({1000, 1001})


class ReadyState(enum.IntEnum):
    """The browser's ``WebSocket.readyState`` values."""

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


@asynccontextmanager
async def open_websocket(
    url: str,
    *,
    route: RouteOptions | None = None,
    subprotocols: Sequence[str] = (),
    extra_headers: HeaderList = (),
    ping_interval: float | None = DEFAULT_PING_INTERVAL,
    ping_timeout: float | None = None,
    close_timeout: float = 5.0,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    message_queue_size: int = 16,
    **route_keywords: Unpack[RouteKeywords],
) -> AsyncIterator[WebSocketConnection]:
    """Open a WebSocket to ``url`` (``ws://`` or ``wss://``) along its route.

    The route is ``route`` (a :class:`~tunnelws.RouteOptions`) with the route
    keywords (``proxy``, ``proxy_auth``, ``connect_timeout``, ...) on top.
    The proxy is found as ``proxy`` says (``AUTO``: from the environment,
    PAC included; ``None``: direct; a URL: that proxy). Through a proxy the
    connection is an HTTP CONNECT tunnel (or SOCKS5), answering Negotiate,
    NTLM, Digest or Basic challenges (``proxy_auth_schemes`` restricts which)
    with ``proxy_auth`` or the proxy URL's credentials; for ``wss://`` TLS runs end
    to end inside the tunnel, verified with ``ssl_context`` (default: the
    system's CAs and ``SSL_CERT_FILE``).

    ``connect_timeout`` bounds everything up to the open WebSocket; a phase
    that exhausts it raises :class:`~tunnelws.PhaseTimeoutError` naming it.
    ``ping_interval`` sends keepalive pings so proxies that kill idle tunnels
    keep this one; no pong within ``ping_timeout`` (default: the interval)
    counts as a lost connection. Leaving the block closes the WebSocket with a
    closing handshake (at most ``close_timeout`` seconds).
    """
    target = parse_target(url)
    if target.scheme not in ("ws", "wss"):
        raise ValueError(f"not a WebSocket URL: {url!r} (use ws:// or wss://)")
    if ping_interval is not None and ping_interval <= 0:
        raise ValueError("ping_interval must be positive")
    options = route_options(route, **route_keywords)
    trace = options.trace
    clock = PhaseClock(options.connect_timeout)
    stream = await connect_origin(target, options, clock)
    try:
        with clock.phase("websocket", f"in the WebSocket handshake with {target.host_header}"):
            protocol, accept = await _handshake(stream, target, subprotocols, extra_headers, trace)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    connection = WebSocketConnection(
        stream,
        protocol,
        accept,
        url=target.url,
        max_message_size=max_message_size,
        message_queue_size=message_queue_size,
        close_timeout=close_timeout,
    )
    # The body's exception is re-raised outside the nursery so callers see it
    # as it was, not wrapped in an exception group.
    body_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        connection._nursery = nursery
        nursery.start_soon(connection._read_frames)
        if ping_interval is not None:
            nursery.start_soon(connection._keepalive, ping_interval, ping_timeout or ping_interval)
        try:
            yield connection
        except BaseException as exc:
            body_error = exc
        finally:
            await connection._finish(failed=body_error is not None)
            nursery.cancel_scope.cancel()
    if body_error is not None:
        raise body_error


async def _handshake(
    stream: trio.abc.Stream,
    target: Target,
    subprotocols: Sequence[str],
    extra_headers: HeaderList,
    trace: Trace | None,
) -> tuple[WSConnection, AcceptConnection]:
    protocol = WSConnection(ConnectionType.CLIENT)
    request = protocol.send(
        Request(
            host=target.host_header,
            target=target.resource,
            subprotocols=list(subprotocols),
            extra_headers=[(name.encode(), value.encode()) for name, value in extra_headers],
        )
    )
    if trace:
        _trace_raw_head(trace, ">", request)
    await _send_or_handshake_error(stream, request)
    rejection: RejectConnection | None = None
    body = bytearray()
    while True:
        try:
            data = await stream.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise HandshakeError(
                f"the connection broke during the WebSocket handshake ({exc.__cause__ or exc})"
            ) from exc
        if not data:
            if rejection is not None:
                raise _rejected(rejection, bytes(body))
            raise HandshakeError("the server closed the connection during the WebSocket handshake")
        try:
            protocol.receive_data(bytes(data))
            for event in protocol.events():
                if isinstance(event, AcceptConnection):
                    if trace:
                        trace_head(
                            trace,
                            "<",
                            "HTTP/1.1 101 Switching Protocols",
                            [
                                (k.decode("latin-1"), v.decode("latin-1"))
                                for k, v in event.extra_headers
                            ],
                        )
                    return protocol, event
                if isinstance(event, RejectConnection):
                    rejection = event
                    if not event.has_body:
                        raise _rejected(event, b"")
                elif isinstance(event, RejectData) and rejection is not None:
                    if len(body) < 4096:
                        body += event.data
                    if event.body_finished:
                        raise _rejected(rejection, bytes(body))
        except RemoteProtocolError as exc:
            raise HandshakeError(f"invalid WebSocket handshake response: {exc}") from exc


async def _send_or_handshake_error(stream: trio.abc.Stream, data: bytes) -> None:
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise HandshakeError(
            f"the connection broke during the WebSocket handshake ({exc.__cause__ or exc})"
        ) from exc


def _rejected(event: RejectConnection, body: bytes) -> HandshakeError:
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers]
    message = f"WebSocket handshake failed: the server answered {event.status_code} instead of 101"
    if event.status_code in (200, 400, 426):
        message += (
            " (if the Upgrade header was stripped on the way, a transparent proxy is in the"
            " path: use wss://, which it cannot see into)"
        )
    return HandshakeError(message, status=event.status_code, headers=headers, body=body)


def _trace_raw_head(trace: Trace, marker: str, head: bytes) -> None:
    lines = head.decode("latin-1").split("\r\n")
    headers = [tuple(line.split(": ", 1)) for line in lines[1:] if ": " in line]
    trace_head(trace, marker, lines[0], headers)  # type: ignore[arg-type]


class WebSocketConnection:
    """An open WebSocket. Use it from :func:`open_websocket`.

    Mirrors the browser API: :attr:`url`, :attr:`ready_state`,
    :attr:`buffered_amount`, :attr:`subprotocol`, :meth:`send`,
    :meth:`receive` (or ``async for message in ws``) and :meth:`close`.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        protocol: WSConnection,
        accept: AcceptConnection,
        *,
        url: str,
        max_message_size: int,
        message_queue_size: int,
        close_timeout: float,
    ) -> None:
        self._stream = stream
        # After the handshake, talk to wsproto's frame-level Connection
        # directly: one layer of generators less on every message.
        assert protocol.connection is not None
        self._protocol: Connection = protocol.connection
        self.url = url
        self.subprotocol: str | None = accept.subprotocol
        self.response_headers: list[tuple[str, str]] = [
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in accept.extra_headers
        ]
        self._max_message_size = max_message_size
        self._queue_size = max(1, message_queue_size)
        self._close_timeout = close_timeout
        self._state = ReadyState.OPEN
        self._messages: deque[str | bytes] = deque()
        self._fragments: list[str | bytes] = []
        self._fragments_size = 0
        self._receivers = trio.lowlevel.ParkingLot()
        self._reader_waiting_for_space = trio.lowlevel.ParkingLot()
        self._send_lock = trio.StrictFIFOLock()
        # Control frames the reader produced (pongs, close replies), written
        # by a separate task so the reader never waits on the send side.
        self._pending_control: deque[bytes] = deque()
        self._flushing = False
        self._nursery: trio.Nursery | None = None
        self._buffered = 0
        self._closed = trio.Event()
        self._last_received = trio.current_time()
        self._pong = trio.Event()
        self._ending: ConnectionClosed | None = None
        self.close_code: int | None = None
        self.close_reason: str = ""

    def __repr__(self) -> str:
        return f"<WebSocketConnection {self.url} {self._state.name}>"

    @property
    def ready_state(self) -> ReadyState:
        return self._state

    @property
    def buffered_amount(self) -> int:
        """Bytes of messages passed to :meth:`send` and not yet written."""
        return self._buffered

    async def send(self, message: str | bytes) -> None:
        """Send a text (``str``) or binary (``bytes``) message.

        Raises :class:`~tunnelws.ConnectionClosed` once closing has started
        (:class:`~tunnelws.ConnectionLostError` if the connection was lost).
        """
        if not isinstance(message, (str, bytes, bytearray, memoryview)):
            raise TypeError(f"message must be str or bytes, not {type(message).__name__}")
        if self._state is not ReadyState.OPEN:
            raise self._closed_error()
        if isinstance(message, str):
            opcode, payload = OPCODE_TEXT, message.encode()
        else:
            opcode, payload = OPCODE_BINARY, bytes(message)
        size = len(message)
        self._buffered += size
        try:
            await self._send_serialized(partial(self._data_frame, opcode, payload))
        finally:
            self._buffered -= size

    async def receive(self) -> str | bytes:
        """The next message: ``str`` for text, ``bytes`` for binary.

        Messages that arrived before the close are delivered first; then
        :class:`~tunnelws.ConnectionClosed` (normal close) or
        :class:`~tunnelws.ConnectionLostError` (abnormal end) is raised.
        """
        while not self._messages:
            if self._ending is not None:
                raise self._ending
            await self._receivers.park()
        message = self._messages.popleft()
        self._reader_waiting_for_space.unpark_all()
        return message

    def __aiter__(self) -> WebSocketConnection:
        return self

    async def __anext__(self) -> str | bytes:
        try:
            return await self.receive()
        except ConnectionLostError:
            raise
        except ConnectionClosed:
            raise StopAsyncIteration from None

    async def ping(self, payload: bytes = b"") -> None:
        """Send a ping; the peer's pong is handled (and awaited) by keepalive."""
        if self._state is not ReadyState.OPEN:
            raise self._closed_error()
        await self._send_event(Ping(payload=payload))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake and wait for it to finish, as long as
        the server keeps sending: ``close_timeout`` seconds of silence end
        the wait. Messages still in flight stay readable with :meth:`receive`."""
        if self._state is ReadyState.OPEN:
            self._state = ReadyState.CLOSING
            # A reader parked on a full queue must run to see the close reply.
            self._reader_waiting_for_space.unpark_all()
            try:
                await self._send_event(CloseConnection(code=code, reason=reason or None))
            except ConnectionClosed:
                return
        # close_timeout bounds silence, not the whole close: echoes still
        # arriving over a slow link are progress (and are delivered).
        self._last_received = max(self._last_received, trio.current_time())
        while not self._closed.is_set():
            deadline = self._last_received + self._close_timeout
            if trio.current_time() >= deadline:
                silence = f"{self._close_timeout:g} s"
                await self._lose(f"no closing handshake and no data from the server for {silence}")
                return
            with trio.move_on_at(deadline):
                await self._closed.wait()

    # -- internals -----------------------------------------------------------

    def _closed_error(self) -> ConnectionClosed:
        if self._ending is not None:
            return self._ending
        return ConnectionClosed(self.close_code or 1005, "the WebSocket is closing")

    async def _send_event(self, event: Event) -> None:
        await self._send_serialized(partial(self._protocol.send, event))

    def _data_frame(self, opcode: int, payload: bytes) -> bytes:
        # Checked under the send lock: a close may have gone out while we
        # waited for it.
        if self._protocol.state is not ConnectionState.OPEN:
            raise self._closed_error()
        return data_frame(opcode, payload)

    async def _send_serialized(self, serialize: Callable[[], bytes]) -> None:
        """Serialize and write one frame under the send lock, so frames
        leave in the order wsproto's state machine saw them."""
        lock = self._send_lock
        # Uncontended (the usual case), take the lock without a scheduling
        # round trip: send_all below is the checkpoint. Measurably faster.
        if lock.locked():
            await lock.acquire()
        else:
            lock.acquire_nowait()
        try:
            try:
                data = serialize()
            except LocalProtocolError as exc:
                raise self._closed_error() from exc
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                await self._lose(f"the connection broke while sending ({exc.__cause__ or exc})")
                raise self._closed_error() from exc
        finally:
            lock.release()

    async def _read_frames(self) -> None:
        """Background task: bytes in, events out, until the connection ends."""
        try:
            while self._ending is None:
                # Frames that arrived with the 101 response are processed first.
                for event in self._protocol.events():
                    await self._handle(event)
                if self._protocol.state is ConnectionState.CLOSED:
                    # Our close reply may still be queued: write it before
                    # closing the stream, within the close timeout.
                    with trio.move_on_after(self._close_timeout):
                        await self._flush_control()
                    await self._end_cleanly()
                    return
                data = await self._stream.receive_some(RECEIVE_SIZE)
                self._last_received = trio.current_time()
                if not data:
                    await self._lose(
                        "the connection was closed without a WebSocket closing handshake"
                    )
                    return
                self._protocol.receive_data(bytes(data))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            await self._lose(f"the connection broke ({exc.__cause__ or exc})")
        except RemoteProtocolError as exc:
            await self._lose(f"the server broke the WebSocket protocol: {exc}", code=1002)

    async def _handle(self, event: Event) -> None:
        if isinstance(event, Message):
            await self._collect(event)
        elif isinstance(event, Ping):
            self._queue_control(event.response())
        elif isinstance(event, Pong):
            self._pong.set()
        elif isinstance(event, CloseConnection):
            self.close_code = event.code
            self.close_reason = event.reason or ""
            if self._protocol.state is ConnectionState.REMOTE_CLOSING:
                self._state = ReadyState.CLOSING
                self._queue_control(event.response())

    async def _collect(self, event: Message[Any]) -> None:
        self._fragments.append(event.data)
        self._fragments_size += len(event.data)
        if self._fragments_size > self._max_message_size:
            self._fragments.clear()
            self._fragments_size = 0
            if self._state is ReadyState.OPEN:
                self._state = ReadyState.CLOSING
                self._queue_control(CloseConnection(code=1009, reason="message too big"))
            return
        if not event.message_finished:
            return
        parts, self._fragments, self._fragments_size = self._fragments, [], 0
        message: str | bytes
        if isinstance(event, TextMessage):
            message = parts[0] if len(parts) == 1 else "".join(parts)  # type: ignore[arg-type]
        else:
            message = parts[0] if len(parts) == 1 else b"".join(parts)  # type: ignore[arg-type]
        # Backpressure while open; once closing, in-flight messages are kept
        # so none is lost (their amount is bounded by close_timeout).
        while len(self._messages) >= self._queue_size and self._state is ReadyState.OPEN:
            await self._reader_waiting_for_space.park()
        self._messages.append(message)
        self._receivers.unpark_all()

    def _queue_control(self, event: Event) -> None:
        """Serialize a control frame now (wsproto's state moves on at once)
        and have it written without blocking the reader.

        A reader that waited for the send lock could deadlock: a sender stuck
        in send_all on a full socket waits for the peer to read, while the
        peer waits for us to read.
        """
        try:
            self._pending_control.append(self._protocol.send(event))
        except LocalProtocolError:
            return  # already closed: nothing to answer
        if not self._flushing and self._nursery is not None:
            self._flushing = True
            self._nursery.start_soon(self._flush_control)

    async def _flush_control(self) -> None:
        try:
            async with self._send_lock:
                while self._pending_control:
                    await self._stream.send_all(self._pending_control.popleft())
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            await self._lose(f"the connection broke while sending ({exc.__cause__ or exc})")
        finally:
            self._flushing = False

    async def _end_cleanly(self) -> None:
        code = self.close_code if self.close_code is not None else 1005
        self._finish_state(ConnectionClosed(code, self.close_reason))
        await trio.aclose_forcefully(self._stream)

    async def _lose(self, why: str, *, code: int = 1006) -> None:
        if self._ending is not None:
            return
        self.close_code = code
        self.close_reason = why
        self._finish_state(
            ConnectionLostError(f"WebSocket connection lost: {why}", code=code, reason=why)
        )
        await trio.aclose_forcefully(self._stream)

    def _finish_state(self, ending: ConnectionClosed) -> None:
        self._ending = ending
        self._state = ReadyState.CLOSED
        self._closed.set()
        self._receivers.unpark_all()
        self._reader_waiting_for_space.unpark_all()

    async def _keepalive(self, interval: float, pong_timeout: float) -> None:
        while True:
            await trio.sleep(interval)
            if self._state is not ReadyState.OPEN:
                return
            self._pong = trio.Event()
            try:
                await self.ping(os.urandom(4))
            except ConnectionClosed:
                return
            with trio.move_on_after(pong_timeout):
                await self._pong.wait()
            if not self._pong.is_set() and self._state is ReadyState.OPEN:
                why = f"no pong within {pong_timeout:g} s of a keepalive ping"
                await self._lose(why, code=1011)
                return

    async def _finish(self, *, failed: bool) -> None:
        """Leaving ``open_websocket``: close politely, or abort if cancelled."""
        if self._ending is not None:
            return
        if failed:
            # The block raised (possibly a cancellation): spend no time on
            # courtesy, but tell the server if it is cheap to do so.
            with trio.CancelScope(shield=True), trio.move_on_after(0.5):
                await self.close(1011, "client error")
            await self._lose("closed after an error in the client")
            return
        await self.close()
