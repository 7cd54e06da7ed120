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
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Literal

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

from ._connection import FallbackMode, ReadyState, WebSocketConnection, wait_while_talking
from ._deflate import (
    EXTENSION_NAME,
    Deflate,
    DeflateParameters,
    NegotiationError,
    client_offer,
    parse_response,
)
from ._errors import (
    ConnectionClosed,
    ConnectionLostError,
    FallbackFailedError,
    HandshakeError,
    MessageTooBigError,
    TunnelError,
)
from ._fallback import open_fallback
from ._fallback_policy import fallback_reason
from ._frames import OPCODE_BINARY, OPCODE_TEXT
from ._protocol import ClientProtocol, Close, Event, Failure, NotOpen, Ping, Pong, State
from ._route_options import HeaderList, RouteKeywords, RouteOptions, route_options
from ._streamio import StreamIO
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
# A 101 response head larger than this is not a WebSocket server's.
MAX_RESPONSE_HEAD = 65536
# How long no receive() call may be waiting before the background task reads
# on its own (answering pings, draining echoes of a sender that never reads).
RECEIVER_GRACE = 0.05
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
    compression: Deflate | str | None = "deflate",
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
    if fallback not in ("auto", "never", "only"):
        raise ValueError(f"fallback must be 'auto', 'never' or 'only', not {fallback!r}")
    deflate = _compression_settings(compression)
    options = route_options(route, **route_keywords)
    settings = _Settings(
        subprotocols=tuple(subprotocols),
        extra_headers=tuple(extra_headers),
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        close_timeout=close_timeout,
        max_message_size=max_message_size,
        message_queue_size=message_queue_size,
        deflate=deflate,
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
    deflate: Deflate | None


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
            handshake = await _handshake(
                stream,
                target,
                settings.subprotocols,
                settings.extra_headers,
                options.trace,
                settings.deflate is not None,
            )
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    transport = NativeTransport(
        stream,
        handshake,
        url=target.url,
        deflate=settings.deflate,
        max_message_size=settings.max_message_size,
        message_queue_size=settings.message_queue_size,
        close_timeout=settings.close_timeout,
    )
    transport._nursery = nursery
    nursery.start_soon(transport._background_reader)
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


class NativeTransport:
    """A native WebSocket: what carries a :class:`WebSocketConnection`
    (see :class:`~tunnelws._connection.Transport`) when the upgrade passed."""

    downstream_mode: FallbackMode | None = None

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

    async def ping(self, payload: bytes = b"") -> None:
        """Send a ping; the peer's pong is handled (and awaited) by keepalive."""
        if self._state is not ReadyState.OPEN:
            raise self._closed_error()
        await self._send_serialized(partial(self._protocol.send_ping, payload))

    async def confirm_open(self, within: float) -> None:
        """Ping and wait up to ``within`` seconds for the pong (or any data):
        raises :class:`~tunnelws.HandshakeError` (status 101) when the path
        passed the 101 but relays nothing, or the connection died at once."""
        started = trio.current_time()
        self._pong = trio.Event()
        with self._reading_needed():
            with suppress(ConnectionClosed):
                await self.ping(b"tunnelws")
            with trio.move_on_after(within):
                await self._pong.wait()  # also set when the connection ends
        if isinstance(self._ending, ConnectionLostError) and not isinstance(
            self._ending, MessageTooBigError  # the server spoke: the path works
        ):
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
            try:
                await self._send_serialized(partial(self._protocol.send_close, code, reason))
            except ConnectionClosed:
                return
        self._last_received = max(self._last_received, trio.current_time())
        with self._reading_needed():
            talking = await wait_while_talking(
                self._closed, lambda: self._last_received, self._close_timeout
            )
        if not talking:
            silence = f"{self._close_timeout:g} s"
            await self._lose(f"no closing handshake and no data from the server for {silence}")

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
        if self._ending is None and not self._reading:
            # Read and drop what is still coming, for a moment: closing with
            # unread data sends a reset, which can discard our Close at the
            # server before it has read it. Memory stays bounded.
            self._reading = True
            try:
                with (
                    trio.move_on_after(min(1.0, self._close_timeout)),
                    suppress(trio.BrokenResourceError, trio.ClosedResourceError),
                ):
                    while await self._io.receive_some(RECEIVE_SIZE):
                        pass
            finally:
                self._reading = False
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
        self._pong.set()  # wakes a keepalive or confirm_open waiting for a pong
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
