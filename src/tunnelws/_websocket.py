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
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import partial

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    RejectConnection,
    RejectData,
    Request,
)
from wsproto.extensions import Extension
from wsproto.utilities import RemoteProtocolError

from ._deflate import (
    EXTENSION_NAME,
    Deflate,
    DeflateParameters,
    NegotiationError,
    client_offer,
    parse_response,
)
from ._errors import ConnectionClosed, ConnectionLostError, HandshakeError, MessageTooBigError
from ._frames import OPCODE_BINARY, OPCODE_TEXT
from ._protocol import ClientProtocol, Close, Event, Failure, NotOpen, Ping, Pong, State
from ._route import AUTO, ProxySetting
from ._streamio import StreamIO
from ._target import Target, parse_target
from ._timeouts import PhaseClock
from ._trace import Trace, trace_head
from ._transport import HeaderList, ProxyAuth, RouteOptions, connect_origin, scheme_names

__all__ = ["ReadyState", "WebSocketConnection", "open_websocket"]

RECEIVE_SIZE = 65536
# How long no receive() call may be waiting before the background task reads
# on its own (answering pings, draining echoes of a sender that never reads).
RECEIVER_GRACE = 0.05
# A 101 response head larger than this is not a WebSocket server's.
MAX_RESPONSE_HEAD = 65536
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
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
    proxy: ProxySetting = AUTO,
    proxy_auth: ProxyAuth = None,
    proxy_headers: HeaderList | None = None,
    ssl_context: ssl.SSLContext | None = None,
    proxy_ssl_context: ssl.SSLContext | None = None,
    proxy_auth_schemes: Sequence[str] | None = None,
    subprotocols: Sequence[str] = (),
    extra_headers: HeaderList = (),
    connect_timeout: float = 10.0,
    ping_interval: float | None = None,
    ping_timeout: float | None = None,
    close_timeout: float = 5.0,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    message_queue_size: int = 16,
    trace: Trace | None = None,
    compression: Deflate | str | None = "deflate",
) -> AsyncIterator[WebSocketConnection]:
    """Open a WebSocket to ``url`` (``ws://`` or ``wss://``) along its route.

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

    ``compression`` offers permessage-deflate (RFC 7692): ``"deflate"`` with
    the default :class:`~tunnelws.Deflate` settings, a ``Deflate(...)``, or
    ``None`` to offer no compression. A message bigger than
    ``max_message_size`` once decompressed fails the connection with close
    code 1009 and :class:`~tunnelws.MessageTooBigError`.
    """
    target = parse_target(url)
    if target.scheme not in ("ws", "wss"):
        raise ValueError(f"not a WebSocket URL: {url!r} (use ws:// or wss://)")
    if ping_interval is not None and ping_interval <= 0:
        raise ValueError("ping_interval must be positive")
    deflate = _compression_settings(compression)
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
    clock = PhaseClock(connect_timeout)
    stream = await connect_origin(target, options, clock)
    try:
        with clock.phase("websocket", f"in the WebSocket handshake with {target.host_header}"):
            handshake = await _handshake(
                stream, target, subprotocols, extra_headers, trace, deflate is not None
            )
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    connection = WebSocketConnection(
        stream,
        handshake,
        url=target.url,
        deflate=deflate,
        max_message_size=max_message_size,
        message_queue_size=message_queue_size,
        close_timeout=close_timeout,
    )
    # The body's exception is re-raised outside the nursery so callers see it
    # as it was, not wrapped in an exception group.
    body_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        connection._nursery = nursery
        nursery.start_soon(connection._background_reader)
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


def _compression_settings(compression: Deflate | str | None) -> Deflate | None:
    if compression is None or isinstance(compression, Deflate):
        return compression
    if compression == "deflate":
        return Deflate()
    raise ValueError(
        f"compression must be 'deflate', a tunnelws.Deflate or None, not {compression!r}"
    )


class _DeflateOffer(Extension):
    """wsproto's hook for the offer and the server's answer; the codec
    itself is tunnelws's (see _deflate)."""

    name = EXTENSION_NAME

    def __init__(self) -> None:
        self.agreed: DeflateParameters | None = None
        self.answer = ""

    def offer(self) -> str:
        return client_offer()

    def finalize(self, offer: str) -> None:
        if self.agreed is not None:
            raise RemoteProtocolError("the server accepted permessage-deflate twice")
        try:
            self.agreed = parse_response(offer.partition(";")[2])
        except NegotiationError as exc:
            raise RemoteProtocolError(f"unacceptable permessage-deflate answer: {exc}") from None
        self.answer = offer


@dataclass
class _Handshake:
    accept: AcceptConnection
    deflate: DeflateParameters | None
    extensions: str
    trailing: bytes  # frames that came with the 101


async def _handshake(
    stream: trio.abc.Stream,
    target: Target,
    subprotocols: Sequence[str],
    extra_headers: HeaderList,
    trace: Trace | None,
    offer_deflate: bool,
) -> _Handshake:
    protocol = WSConnection(ConnectionType.CLIENT)
    offer = _DeflateOffer()
    request = protocol.send(
        Request(
            host=target.host_header,
            target=target.resource,
            subprotocols=list(subprotocols),
            extensions=[offer] if offer_deflate else [],
            extra_headers=[(name.encode(), value.encode()) for name, value in extra_headers],
        )
    )
    if trace:
        _trace_raw_head(trace, ">", request)
    await _send_or_handshake_error(stream, request)
    rejection: RejectConnection | None = None
    body = bytearray()

    def feed(data: bytes) -> AcceptConnection | None:
        nonlocal rejection
        try:
            protocol.receive_data(data)
            for event in protocol.events():
                if isinstance(event, AcceptConnection):
                    return event
                if isinstance(event, RejectConnection):
                    rejection = event
                    if not event.has_body:
                        raise _rejected(event, b"")
                elif isinstance(event, RejectData) and rejection is not None:
                    if len(body) < 4096:
                        body.extend(event.data)
                    if event.body_finished:
                        raise _rejected(rejection, bytes(body))
        except RemoteProtocolError as exc:
            raise HandshakeError(f"invalid WebSocket handshake response: {exc}") from exc
        return None

    # The response head goes to wsproto; what follows it is a rejection's
    # body (wsproto's too) or the first frames, which are ours.
    head: bytes | None = b""
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
        if head is not None:
            head += data
            head_end = head.find(b"\r\n\r\n")
            if head_end < 0:
                if len(head) > MAX_RESPONSE_HEAD:
                    raise HandshakeError(
                        f"the WebSocket handshake response head exceeds {MAX_RESPONSE_HEAD} bytes"
                    )
                continue
            accept = feed(head[: head_end + 4])
            data, head = head[head_end + 4 :], None
            if accept is not None:
                if trace:
                    trace_head(
                        trace,
                        "<",
                        "HTTP/1.1 101 Switching Protocols",
                        [
                            (k.decode("latin-1"), v.decode("latin-1"))
                            for k, v in accept.extra_headers
                        ],
                    )
                return _Handshake(accept, offer.agreed, offer.answer, data)
            if not data:
                continue
        feed(bytes(data))


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
    :attr:`buffered_amount`, :attr:`subprotocol`, :attr:`extensions`,
    :meth:`send`, :meth:`receive` (or ``async for message in ws``) and
    :meth:`close`.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        handshake: _Handshake,
        *,
        url: str,
        deflate: Deflate | None,
        max_message_size: int,
        message_queue_size: int,
        close_timeout: float,
    ) -> None:
        self._stream = stream
        self._io = StreamIO(stream)
        accept = handshake.accept
        self._protocol = ClientProtocol(
            max_message_size=max_message_size,
            deflate=handshake.deflate,
            settings=deflate,
        )
        self.url = url
        self.subprotocol: str | None = accept.subprotocol
        #: The extensions the server accepted, as it wrote them
        #: (``Sec-WebSocket-Extensions``); "" when none.
        self.extensions: str = handshake.extensions
        self.response_headers: list[tuple[str, str]] = [
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in accept.extra_headers
        ]
        self._max_message_size = max_message_size
        self._queue_size = max(1, message_queue_size)
        self._close_timeout = close_timeout
        self._state = ReadyState.OPEN
        self._messages: deque[str | bytes] = deque()
        # Frames that arrived with the 101, parsed by the first read.
        self._trailing = handshake.trailing
        # Reading: whoever needs data reads, one task at a time. A receive()
        # call reads itself (a scheduler pass less per message than handing
        # over from a reader task); the background task reads when no
        # receive() has been waiting for RECEIVER_GRACE, or when closing or
        # waiting for a pong needs it.
        self._reading = False
        self._receiving = 0  # receive() calls in progress
        self._receiver_left = trio.current_time()
        self._urgent = 0  # close() and keepalive waiting for the server
        self._receivers = trio.lowlevel.ParkingLot()
        self._background = trio.lowlevel.ParkingLot()
        # What the parked background task waits for: "receivers" (to be
        # gone), "room" (in the queue) or "grace" (a timer).
        self._background_waits = ""
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
        # Set when we fail the connection: it ends once our Close is written.
        self._failure: ConnectionLostError | None = None
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
        if isinstance(message, str):
            opcode, payload = OPCODE_TEXT, message.encode()
        elif isinstance(message, (bytes, bytearray, memoryview)):
            opcode, payload = OPCODE_BINARY, message if type(message) is bytes else bytes(message)
        else:
            raise TypeError(f"message must be str or bytes, not {type(message).__name__}")
        if self._state is not ReadyState.OPEN:
            raise self._closed_error()
        size = len(message)
        self._buffered += size
        try:
            await self._send_serialized(partial(self._protocol.send_message, payload, opcode))
        finally:
            self._buffered -= size

    async def receive(self) -> str | bytes:
        """The next message: ``str`` for text, ``bytes`` for binary.

        Messages that arrived before the close are delivered first; then
        :class:`~tunnelws.ConnectionClosed` (normal close) or
        :class:`~tunnelws.ConnectionLostError` (abnormal end, including
        :class:`~tunnelws.MessageTooBigError`) is raised.
        """
        messages = self._messages
        if not messages:
            self._receiving += 1
            try:
                while not messages:
                    if self._ending is not None:
                        raise self._ending
                    if self._reading:
                        await self._receivers.park()  # the reader delivers, or steps aside
                    else:
                        await self._read()
            finally:
                self._receiving -= 1
                self._receiver_left = trio.current_time()
                if self._receivers:
                    self._receivers.unpark()  # another receive() may read now
                elif self._background_waits == "receivers" and not self._receiving:
                    self._background.unpark()
        message = messages.popleft()
        if self._background_waits == "room" and len(messages) < self._queue_size:
            self._background.unpark()
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
        await self._send_serialized(partial(self._protocol.send_ping, payload))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake and wait for it to finish, as long as
        the server keeps sending: ``close_timeout`` seconds of silence end
        the wait. Messages still in flight stay readable with :meth:`receive`."""
        if self._state is ReadyState.OPEN:
            self._state = ReadyState.CLOSING
            try:
                await self._send_serialized(partial(self._protocol.send_close, code, reason))
            except ConnectionClosed:
                return
        # close_timeout bounds silence, not the whole close: echoes still
        # arriving over a slow link are progress (and are delivered).
        self._last_received = max(self._last_received, trio.current_time())
        with self._reading_needed():
            while not self._closed.is_set():
                deadline = self._last_received + self._close_timeout
                if trio.current_time() >= deadline:
                    silence = f"{self._close_timeout:g} s"
                    await self._lose(
                        f"no closing handshake and no data from the server for {silence}"
                    )
                    return
                with trio.move_on_at(deadline):
                    await self._closed.wait()

    # -- internals -----------------------------------------------------------

    def _closed_error(self) -> ConnectionClosed:
        if self._ending is not None:
            return self._ending
        if self._failure is not None:
            return self._failure
        return ConnectionClosed(self.close_code or 1005, "the WebSocket is closing")

    async def _send_serialized(self, serialize: Callable[[], bytes]) -> None:
        """Serialize and write one frame under the send lock, so frames
        leave in the order the protocol's state machine saw them."""
        lock = self._send_lock
        # Uncontended (the usual case), take the lock without a scheduling
        # round trip: send_all below is the checkpoint. Measurably faster.
        if lock.locked():
            await lock.acquire()
        else:
            lock.acquire_nowait()
        try:
            try:
                # Under the lock: a close may have gone out while we waited.
                data = serialize()
            except NotOpen as exc:
                raise self._closed_error() from exc
            try:
                await self._io.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                await self._lose(f"the connection broke while sending ({exc.__cause__ or exc})")
                raise self._closed_error() from exc
        finally:
            lock.release()

    @contextmanager
    def _reading_needed(self) -> Iterator[None]:
        """While the block runs, the background task reads at once when no
        receive() does (close() and keepalive wait for the server)."""
        self._urgent += 1
        self._background.unpark()
        try:
            yield
        finally:
            self._urgent -= 1

    async def _read(self) -> None:
        """Read once from the stream and act on what arrived. The caller
        makes sure nobody else is reading."""
        self._reading = True
        try:
            if self._trailing:
                data: bytes | bytearray = self._trailing
                self._trailing = b""
            else:
                data = await self._io.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            await self._lose(f"the connection broke ({exc.__cause__ or exc})")
            return
        finally:
            self._reading = False
        self._last_received = trio.current_time()
        if not data:
            await self._lose("the connection was closed without a WebSocket closing handshake")
            return
        messages = self._messages
        for event in self._protocol.receive_data(data):
            if isinstance(event, (str, bytes)):
                messages.append(event)
            else:
                self._handle(event)
        self._receivers.unpark_all()
        if self._failure is not None:
            await self._end_failed()
        elif self._protocol.state is State.CLOSED:
            # Our close reply may still be queued: write it before closing
            # the stream, within the close timeout.
            with trio.move_on_after(self._close_timeout):
                await self._flush_control()
            await self._end_cleanly()

    async def _background_reader(self) -> None:
        """Reads whenever no receive() call does and it is needed: pings get
        their pongs, the close is seen, and the echoes of a sender that never
        receives are drained (up to the queue's size while open)."""
        while self._ending is None:
            if self._reading or self._receiving:
                await self._park_background("receivers")
                # A receive() just returned and is probably coming back:
                # sleep through the grace period rather than wake per message.
                if self._state is ReadyState.OPEN and not self._urgent:
                    await self._grace()
                continue
            if self._state is ReadyState.OPEN:
                if len(self._messages) >= self._queue_size:
                    await self._park_background("room")  # backpressure
                    continue
                if not self._urgent and trio.current_time() < self._receiver_left + RECEIVER_GRACE:
                    await self._grace()
                    continue
            await self._read()

    async def _grace(self) -> None:
        with trio.move_on_at(self._receiver_left + RECEIVER_GRACE):
            await self._park_background("grace")

    async def _park_background(self, reason: str) -> None:
        self._background_waits = reason
        try:
            await self._background.park()
        finally:
            self._background_waits = ""

    def _handle(self, event: Event) -> None:
        if isinstance(event, Ping):
            self._queue_control(partial(self._protocol.send_pong, event.payload))
        elif isinstance(event, Pong):
            self._pong.set()
        elif isinstance(event, Close):
            self.close_code = event.code
            self.close_reason = event.reason
            if self._protocol.state is State.REMOTE_CLOSING:
                self._state = ReadyState.CLOSING
                self._queue_control(partial(self._protocol.send_close, event.code, event.reason))
        elif isinstance(event, Failure):
            self._fail(event)

    def _fail(self, failure: Failure) -> None:
        """The server broke the protocol: send Close with the failure's code,
        then end without waiting for its answer (RFC 6455 7.1.7)."""
        why = f"the server broke the WebSocket protocol: {failure.reason}"
        if failure.code == 1009:
            self._failure = MessageTooBigError(
                f"WebSocket connection failed: {failure.reason} (max_message_size)",
                limit=self._max_message_size,
            )
        else:
            self._failure = ConnectionLostError(
                f"WebSocket connection failed: {why}", code=failure.code, reason=why
            )
        self._state = ReadyState.CLOSING
        reason = "message too big" if failure.code == 1009 else failure.reason
        self._queue_control(partial(self._protocol.send_close, failure.code, reason))

    def _queue_control(self, serialize: Callable[[], bytes]) -> None:
        """Serialize a control frame now (the protocol's state moves on at
        once) and have it written without blocking the reader.

        A reader that waited for the send lock could deadlock: a sender stuck
        in send_all on a full socket waits for the peer to read, while the
        peer waits for us to read.
        """
        try:
            self._pending_control.append(serialize())
        except NotOpen:
            return  # already closed: nothing to answer
        if not self._flushing and self._nursery is not None:
            self._flushing = True
            self._nursery.start_soon(self._flush_control)

    async def _flush_control(self) -> None:
        try:
            async with self._send_lock:
                while self._pending_control:
                    await self._io.send_all(self._pending_control.popleft())
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            await self._lose(f"the connection broke while sending ({exc.__cause__ or exc})")
        finally:
            self._flushing = False

    async def _end_cleanly(self) -> None:
        code = self.close_code if self.close_code is not None else 1005
        self._finish_state(ConnectionClosed(code, self.close_reason))
        await trio.aclose_forcefully(self._stream)

    async def _end_failed(self) -> None:
        failure = self._failure
        assert failure is not None
        with trio.move_on_after(self._close_timeout):
            await self._flush_control()
        if self._ending is None:
            self.close_code = failure.code
            self.close_reason = failure.reason
            self._finish_state(failure)
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
        self._background.unpark_all()

    async def _keepalive(self, interval: float, pong_timeout: float) -> None:
        while True:
            await trio.sleep(interval)
            if self._state is not ReadyState.OPEN:
                return
            self._pong = trio.Event()
            with self._reading_needed():
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
