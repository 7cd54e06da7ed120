"""A minimal WebSocket message channel over an already upgraded stream.

``check`` performs the upgrade itself (to see the raw reply), then needs
messages, pings and an exact record of how the connection ended: closed,
reset, or a close frame with which code. wsproto's post-handshake
``Connection`` does the framing; this class only moves bytes.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import trio
from wsproto.connection import Connection, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

__all__ = ["ChannelLost", "MessageChannel"]

RECEIVE_SIZE = 65536


class ChannelLost(Exception):
    """The connection ended: ``how`` is ``"closed"``, ``"reset"`` or
    ``"close-frame"`` (then ``code`` is the close code)."""

    def __init__(self, how: str, *, code: int | None = None, detail: str = "") -> None:
        super().__init__(f"connection {how}" + (f" ({detail})" if detail else ""))
        self.how = how
        self.code = code


class MessageChannel:
    """Send and receive whole messages; pings are answered, pongs counted."""

    def __init__(self, stream: trio.abc.Stream, trailing_data: bytes = b"") -> None:
        self.stream = stream
        self._protocol = Connection(ConnectionType.CLIENT, trailing_data=trailing_data)
        self._ready: deque[str | bytes] = deque()
        self._parts: list[Any] = []
        self._send_lock = trio.Lock()
        self.bytes_moved = 0
        self.pongs = 0
        if trailing_data:
            self._process_events()

    async def send(self, message: str | bytes) -> None:
        event: Message[Any] = (
            TextMessage(data=message) if isinstance(message, str) else BytesMessage(data=message)
        )
        await self._send_bytes(self._protocol.send(event))

    async def ping(self, payload: bytes = b"check") -> None:
        await self._send_bytes(self._protocol.send(Ping(payload=payload)))

    async def receive(self) -> str | bytes:
        """The next whole message; :class:`ChannelLost` when the connection ends."""
        while not self._ready:
            try:
                data = await self.stream.receive_some(RECEIVE_SIZE)
            except trio.BrokenResourceError as exc:
                raise ChannelLost("reset", detail=str(exc.__cause__ or exc)) from exc
            if not data:
                raise ChannelLost("closed")
            self.bytes_moved += len(data)
            try:
                self._protocol.receive_data(bytes(data))
            except RemoteProtocolError as exc:
                raise ChannelLost("closed", detail=f"protocol error: {exc}") from exc
            await self._answer(self._process_events())
        return self._ready.popleft()

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)

    async def _send_bytes(self, data: bytes) -> None:
        async with self._send_lock:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ChannelLost("reset", detail=str(exc.__cause__ or exc)) from exc
        self.bytes_moved += len(data)

    def _process_events(self) -> list[bytes]:
        """Collect messages; return frames to send back (pongs)."""
        replies: list[bytes] = []
        for event in self._protocol.events():
            if isinstance(event, (TextMessage, BytesMessage)):
                self._parts.append(event.data)
                if event.message_finished:
                    if isinstance(event, TextMessage):
                        self._ready.append("".join(str(p) for p in self._parts))
                    else:
                        self._ready.append(b"".join(bytes(p) for p in self._parts))
                    self._parts.clear()
            elif isinstance(event, Ping):
                replies.append(self._protocol.send(event.response()))
            elif isinstance(event, Pong):
                self.pongs += 1
            elif isinstance(event, CloseConnection):
                raise ChannelLost("close-frame", code=event.code, detail=event.reason or "")
        return replies

    async def _answer(self, replies: list[bytes]) -> None:
        for reply in replies:
            await self._send_bytes(reply)
