"""The connection object applications hold, whatever carries the messages.

:class:`WebSocketConnection` has the browser's API. Behind it is a
:class:`Transport`: the native WebSocket (``_websocket``) or the HTTP
fallback session (``_fallback``), chosen by
:func:`~tunnelws.open_websocket`. Applications never see the difference,
except where they ask: :attr:`WebSocketConnection.transport`, ``fallback_reason``
and ``fallback_mode``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Literal, Protocol

import trio

from ._errors import ConnectionClosed, ConnectionLostError

__all__ = [
    "FallbackMode",
    "ReadyState",
    "Transport",
    "TransportKind",
    "WebSocketConnection",
    "wait_while_talking",
]

TransportKind = Literal["websocket", "http-fallback"]
FallbackMode = Literal["streaming", "long-polling"]


class ReadyState(enum.IntEnum):
    """The browser's ``WebSocket.readyState`` values."""

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


class Transport(Protocol):
    """What carries a :class:`WebSocketConnection`'s messages.

    ``send``/``receive``/``close``/``ping`` behave as the connection's methods
    document; ``finish`` runs when the ``open_websocket`` block ends (close
    politely, or abort when the block failed).
    """

    url: str
    subprotocol: str | None
    response_headers: list[tuple[str, str]]
    close_code: int | None
    close_reason: str

    @property
    def ready_state(self) -> ReadyState: ...

    @property
    def buffered_amount(self) -> int: ...

    @property
    def downstream_mode(self) -> FallbackMode | None: ...

    async def send(self, message: str | bytes) -> None: ...

    async def receive(self) -> str | bytes: ...

    async def ping(self, payload: bytes = b"") -> None: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...

    async def finish(self, *, failed: bool) -> None: ...


async def wait_while_talking(
    closed: trio.Event, last_heard: Callable[[], float], silence: float
) -> bool:
    """Wait for ``closed`` as long as the peer keeps talking: True once it
    is set, False after ``silence`` seconds without a sign of the peer
    (``last_heard()``: when it last sent something). How both transports
    bound a close: by silence, not in total, so echoes still arriving over a
    slow link are progress (and are delivered)."""
    while not closed.is_set():
        deadline = last_heard() + silence
        if trio.current_time() >= deadline:
            return False
        with trio.move_on_at(deadline):
            await closed.wait()
    return True


class WebSocketConnection:
    """An open WebSocket. Use it from :func:`~tunnelws.open_websocket`.

    Mirrors the browser API: :attr:`url`, :attr:`ready_state`,
    :attr:`buffered_amount`, :attr:`subprotocol`, :meth:`send`,
    :meth:`receive` (or ``async for message in ws``) and :meth:`close`.
    :attr:`transport` says what carries it: ``"websocket"`` or, when the
    WebSocket could not pass, ``"http-fallback"`` (then
    :attr:`fallback_reason` says why and :attr:`fallback_mode` how the
    downstream travels).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        kind: TransportKind = "websocket",
        fallback_reason: str | None = None,
    ) -> None:
        self._transport = transport
        self._kind: TransportKind = kind
        #: Why the HTTP fallback carries this connection (None: native).
        self.fallback_reason = fallback_reason

    def __repr__(self) -> str:
        how = "" if self._kind == "websocket" else f" via {self._kind} ({self.fallback_mode})"
        return f"<WebSocketConnection {self.url} {self.ready_state.name}{how}>"

    @property
    def transport(self) -> TransportKind:
        """``"websocket"`` (native) or ``"http-fallback"``."""
        return self._kind

    @property
    def fallback_mode(self) -> FallbackMode | None:
        """For the fallback, how messages come down: ``"streaming"`` (one
        streamed response after another) or ``"long-polling"`` (something on
        the path buffers responses); None for a native WebSocket."""
        return self._transport.downstream_mode

    @property
    def url(self) -> str:
        return self._transport.url

    @property
    def subprotocol(self) -> str | None:
        return self._transport.subprotocol

    @property
    def response_headers(self) -> list[tuple[str, str]]:
        """The handshake response's headers (none for the fallback)."""
        return self._transport.response_headers

    @property
    def close_code(self) -> int | None:
        return self._transport.close_code

    @property
    def close_reason(self) -> str:
        return self._transport.close_reason

    @property
    def ready_state(self) -> ReadyState:
        return self._transport.ready_state

    @property
    def buffered_amount(self) -> int:
        """Bytes of messages passed to :meth:`send` and not yet written
        (for the fallback: not yet acknowledged by the server)."""
        return self._transport.buffered_amount

    async def send(self, message: str | bytes) -> None:
        """Send a text (``str``) or binary (``bytes``) message.

        Raises :class:`~tunnelws.ConnectionClosed` once closing has started
        (:class:`~tunnelws.ConnectionLostError` if the connection was lost).
        """
        await self._transport.send(message)

    async def receive(self) -> str | bytes:
        """The next message: ``str`` for text, ``bytes`` for binary.

        Messages that arrived before the close are delivered first; then
        :class:`~tunnelws.ConnectionClosed` (normal close) or
        :class:`~tunnelws.ConnectionLostError` (abnormal end) is raised.
        """
        return await self._transport.receive()

    def __aiter__(self) -> WebSocketConnection:
        return self

    async def __anext__(self) -> str | bytes:
        try:
            return await self._transport.receive()
        except ConnectionLostError:
            raise
        except ConnectionClosed:
            raise StopAsyncIteration from None

    async def ping(self, payload: bytes = b"") -> None:
        """Send a ping; the peer's pong is handled (and awaited) by keepalive.
        Over the fallback there are no pings (its heartbeats keep the path
        alive): this only checks that the connection is open."""
        await self._transport.ping(payload)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake and wait for it to finish, as long as
        the server keeps sending: ``close_timeout`` seconds of silence end
        the wait. Messages still in flight stay readable with :meth:`receive`."""
        await self._transport.close(code, reason)
