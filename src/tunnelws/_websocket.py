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

import os
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

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

from ._connection import FallbackMode, ReadyState, WebSocketConnection, wait_while_talking
from ._errors import (
    ConnectionClosed,
    ConnectionLostError,
    FallbackFailedError,
    HandshakeError,
    TunnelError,
)
from ._fallback import open_fallback
from ._fallback_policy import fallback_reason
from ._frames import OPCODE_BINARY, OPCODE_TEXT, data_frame
from ._route_options import HeaderList, RouteKeywords, RouteOptions, route_options
from ._target import Target, parse_target
from ._timeouts import PhaseClock
from ._trace import Trace, trace_head
from ._transport import connect_origin

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "FallbackSetting",
    "NativeTransport",
    "ReadyState",
    "WebSocketConnection",
    "open_websocket",
]

RECEIVE_SIZE = 65536
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
# Keepalive pings by default, every 20 s like python-websockets: below the idle
# limits of common proxies and NATs (None turns them off).
DEFAULT_PING_INTERVAL = 20.0
NORMAL_CLOSE_CODES = frozenset({1000, 1001})
#: With ``fallback="auto"``, how long a pong may take after the 101: a path
#: that passes the 101 and then relays nothing shows here, not later.
CONFIRM_TIMEOUT = 3.0

FallbackSetting = Literal["auto", "never", "only"]


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
    fallback: FallbackSetting = "auto",
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

    ``fallback``: with ``"auto"`` (the default), when the WebSocket fails in a
    way plain HTTP can get around (the proxy refuses CONNECT by policy for a
    ``ws://`` URL, the upgrade is answered with something else than 101, or a
    101 is followed by nothing), the same connection object is carried by the
    HTTP fallback protocol instead (``docs/fallback-protocol.md``), over the
    same route; a TLS verification failure, a 407 or a timeout never falls
    back. ``"never"``: native only; ``"only"``: the fallback only. When both
    fail, :class:`~tunnelws.FallbackFailedError` names both reasons.

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
    if fallback not in ("auto", "never", "only"):
        raise ValueError(f"fallback must be 'auto', 'never' or 'only', not {fallback!r}")
    options = route_options(route, **route_keywords)
    settings = _Settings(
        subprotocols=tuple(subprotocols),
        extra_headers=tuple(extra_headers),
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        close_timeout=close_timeout,
        max_message_size=max_message_size,
        message_queue_size=message_queue_size,
    )
    # Exceptions are re-raised outside the nursery so callers see them as
    # they were, not wrapped in an exception group.
    open_error: BaseException | None = None
    body_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        try:
            connection = await _connect(nursery, target, options, settings, fallback)
        except BaseException as exc:
            open_error = exc
            nursery.cancel_scope.cancel()
        else:
            try:
                yield connection
            except BaseException as exc:
                body_error = exc
            finally:
                await connection._transport.finish(failed=body_error is not None)
                nursery.cancel_scope.cancel()
    if open_error is not None:
        raise open_error
    if body_error is not None:
        raise body_error


@dataclass(frozen=True)
class _Settings:
    subprotocols: tuple[str, ...]
    extra_headers: tuple[tuple[str, str], ...]
    ping_interval: float | None
    ping_timeout: float | None
    close_timeout: float
    max_message_size: int
    message_queue_size: int


async def _connect(
    nursery: trio.Nursery,
    target: Target,
    options: RouteOptions,
    settings: _Settings,
    fallback: FallbackSetting,
) -> WebSocketConnection:
    """The native WebSocket, or the fallback as ``fallback`` says."""
    if fallback == "only":
        return await _open_fallback(nursery, target, options, settings, "fallback='only'")
    try:
        transport = await _open_native(
            nursery, target, options, settings, confirm=fallback == "auto"
        )
    except TunnelError as native:
        reason = None if fallback == "never" else fallback_reason(native, target)
        if reason is None:
            raise
        if options.trace:
            options.trace(f"* WebSocket cannot pass: {reason}; trying the HTTP fallback")
        try:
            return await _open_fallback(nursery, target, options, settings, reason)
        except TunnelError as failed:
            raise FallbackFailedError(native, failed) from failed
    return WebSocketConnection(transport)


async def _open_native(
    nursery: trio.Nursery,
    target: Target,
    options: RouteOptions,
    settings: _Settings,
    *,
    confirm: bool,
) -> NativeTransport:
    clock = PhaseClock(options.connect_timeout)
    stream = await connect_origin(target, options, clock)
    try:
        with clock.phase("websocket", f"in the WebSocket handshake with {target.host_header}"):
            protocol, accept = await _handshake(
                stream, target, settings.subprotocols, settings.extra_headers, options.trace
            )
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    transport = NativeTransport(
        stream,
        protocol,
        accept,
        url=target.url,
        max_message_size=settings.max_message_size,
        message_queue_size=settings.message_queue_size,
        close_timeout=settings.close_timeout,
    )
    transport._nursery = nursery
    nursery.start_soon(transport._read_frames)
    if confirm:
        await transport.confirm_open(CONFIRM_TIMEOUT)
    if settings.ping_interval is not None:
        interval = settings.ping_interval
        nursery.start_soon(transport._keepalive, interval, settings.ping_timeout or interval)
    return transport


async def _open_fallback(
    nursery: trio.Nursery,
    target: Target,
    options: RouteOptions,
    settings: _Settings,
    reason: str,
) -> WebSocketConnection:
    session = await open_fallback(
        nursery,
        target,
        options,
        subprotocols=settings.subprotocols,
        extra_headers=settings.extra_headers,
        close_timeout=settings.close_timeout,
        max_message_size=settings.max_message_size,
    )
    return WebSocketConnection(session, kind="http-fallback", fallback_reason=reason)


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


class NativeTransport:
    """A native WebSocket: what carries a :class:`WebSocketConnection`
    (see :class:`~tunnelws._connection.Transport`) when the upgrade passed."""

    downstream_mode: FallbackMode | None = None

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
        return f"<NativeTransport {self.url} {self._state.name}>"

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

    async def ping(self, payload: bytes = b"") -> None:
        """Send a ping; the peer's pong is handled (and awaited) by keepalive."""
        if self._state is not ReadyState.OPEN:
            raise self._closed_error()
        await self._send_event(Ping(payload=payload))

    async def confirm_open(self, within: float) -> None:
        """Ping and wait up to ``within`` seconds for the pong (or any data):
        raises :class:`~tunnelws.HandshakeError` (status 101) when the path
        passed the 101 but relays nothing, or the connection died at once."""
        started = trio.current_time()
        self._pong = trio.Event()
        with suppress(ConnectionClosed):
            await self.ping(b"tunnelws")
        with trio.move_on_after(within):
            await self._pong.wait()  # also set when the connection ends
        if isinstance(self._ending, ConnectionLostError):
            raise HandshakeError(
                f"the connection ended right after the 101 ({self._ending.reason})", status=101
            )
        if self._ending is not None or self._pong.is_set() or self._last_received > started:
            return
        await self._lose(f"nothing followed the 101 within {within:g} s")
        raise HandshakeError(
            f"the server answered 101 but nothing followed within {within:g} s (no pong):"
            " something on the path holds the WebSocket's bytes back",
            status=101,
        )

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
        self._last_received = max(self._last_received, trio.current_time())
        if not await wait_while_talking(
            self._closed, lambda: self._last_received, self._close_timeout
        ):
            silence = f"{self._close_timeout:g} s"
            await self._lose(f"no closing handshake and no data from the server for {silence}")

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
        self._pong.set()  # wakes a keepalive or confirm_open waiting for a pong
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

    async def finish(self, *, failed: bool) -> None:
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
