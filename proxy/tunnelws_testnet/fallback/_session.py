"""One session in trio: the application's socket-like handle on it, and the
wake-ups that move requests and the application along.

The state is :class:`._state.SessionState`; this layer only waits. Every
change fires :meth:`Session.changed`, and whoever waits (a downstream
request, an application blocked on a full window or an empty queue) looks
at the state again.
"""

from __future__ import annotations

import h11
import trio

from ._state import Close, SessionState

__all__ = ["FallbackSocket", "OpenRequest", "Session", "SessionClosed"]


class SessionClosed(Exception):
    """The application sent after the session started closing or ended."""


class OpenRequest:
    """What the client asked for when it opened the session."""

    def __init__(
        self,
        resource: str,
        subprotocols: tuple[str, ...],
        headers: tuple[tuple[str, str], ...],
        request: h11.Request,
    ) -> None:
        #: The WebSocket resource (path and query) the session stands for.
        self.resource = resource
        self.subprotocols = subprotocols
        #: Extra handshake headers from the open request's JSON body.
        self.headers = headers
        #: The ``open`` POST's own head (its Origin, User-Agent, Cookie...).
        self.request = request

    def header(self, name: str) -> str | None:
        """A header of the ``open`` POST itself (first value, case-insensitive)."""
        wanted = name.lower().encode()
        for key, value in self.request.headers:
            if key == wanted:
                return value.decode("latin-1")
        return None


class Session:
    """A session's state plus the event that wakes whoever waits on it."""

    def __init__(self, state: SessionState, open_request: OpenRequest) -> None:
        self.state = state
        self.open_request = open_request
        self.subprotocol: str | None = None
        self._changed = trio.Event()
        #: The application's task scope: cancelled a grace period after the
        #: session is forgotten, should the application not notice.
        self.app_scope = trio.CancelScope()

    def fire(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def changed(self) -> None:
        """Wait for the next change (callers re-check the state after it)."""
        await self._changed.wait()

    def now(self) -> float:
        return trio.current_time()


class FallbackSocket:
    """The application's end of one session: like a server-side WebSocket.

    :meth:`receive` returns ``str`` (text), ``bytes`` (binary) or a
    :class:`Close`: the client's close (answer it with :meth:`close`), or
    ``Close(1006, clean=False)`` when the session expired or was dropped.
    :meth:`send` waits while the downstream window is full (backpressure).
    """

    def __init__(self, session: Session) -> None:
        self._session = session

    @property
    def request(self) -> OpenRequest:
        return self._session.open_request

    @property
    def session_id(self) -> str:
        return self._session.state.id

    @property
    def closed(self) -> bool:
        """True once this side sent its close or the session ended."""
        return self._session.state.sending_closed

    async def send(self, message: str | bytes) -> None:
        state = self._session.state
        while not state.sending_closed and not state.can_send:
            await self._session.changed()
        if state.sending_closed:
            raise SessionClosed("the session is closing")
        state.push(message)
        self._session.fire()

    async def receive(self) -> str | bytes | Close:
        state = self._session.state
        while True:
            item = state.pop()
            if item is not None:
                if state.backpressured:
                    self._session.fire()  # room again: the stream sends an ack event
                if isinstance(item, Close):
                    state.inbox.appendleft(item)  # every later receive() sees it too
                return item
            await self._session.changed()

    async def close(self, code: int | None = 1000, reason: str = "") -> None:
        """Send our close (once). ``code`` None means "no status" (1005)."""
        state = self._session.state
        state.push_close(code, reason, self._session.now())
        self._session.fire()
        await trio.lowlevel.checkpoint()
