"""One fallback session's state, Sans-IO: the two delivery windows, the
queue towards the application, the closing handshake and expiry.

No sockets, no trio, no clock: callers pass ``now``. The trio layer
(:mod:`._session`) waits on it; the HTTP layer (:mod:`._endpoints`) feeds it
requests. Every bound lives here, so memory per session is bounded by
``window`` messages or ``buffer_bytes`` per direction (plus one message,
which is always let through so that a large message cannot wedge a session).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from tunnelws.fallback import (
    FallbackMessage,
    FallbackProtocolError,
    ReceiveWindow,
    SendWindow,
    SessionLimits,
    UpstreamBatch,
)

__all__ = ["Close", "SequenceGap", "SessionState"]

#: What the application sees when a session ends without a closing handshake.
LOST_CODE = 1006


class SequenceGap(FallbackProtocolError):
    """Upstream messages skipped a sequence number: some were lost (409)."""


@dataclass(frozen=True)
class Close:
    """The end of a session as the application sees it: the client's close
    (``clean``) or a session that expired or was dropped (1006)."""

    code: int | None
    reason: str = ""
    clean: bool = True


Inbound = str | bytes | Close


class SessionState:
    """Everything one session knows; mutated by requests and the application."""

    def __init__(self, session_id: str, limits: SessionLimits, buffer_bytes: int, now: float):
        self.id = session_id
        self.limits = limits
        self.buffer_bytes = buffer_bytes
        self.down = SendWindow(limits.window)
        self._down_bytes = 0
        self.up = ReceiveWindow()
        self.inbox: deque[Inbound] = deque()
        self._inbox_bytes = 0
        self.local_close: FallbackMessage | None = None
        self.remote_close_taken = False
        self.ended: Close | None = None  # expired or dropped: no more requests
        self.last_activity = now
        self.open_requests = 0
        self.up_in_flight = False
        #: An upstream POST was taken only in part; the client waits for an
        #: ``ack`` event, sent once the application made room.
        self.backpressured = False
        self.finished_at: float | None = None
        #: Each downstream request takes the next number; an older request
        #: still open sees it changed and finishes (the client moved on).
        self.down_generation = 0

    # -- the application's side ------------------------------------------------

    @property
    def can_send(self) -> bool:
        """Room in the downstream window (an empty window always has room)."""
        if not len(self.down):
            return True
        return not self.down.full and self._down_bytes < self.buffer_bytes

    @property
    def sending_closed(self) -> bool:
        return self.local_close is not None or self.ended is not None

    def push(self, message: str | bytes) -> FallbackMessage:
        """Queue an application message downstream (check :attr:`can_send`)."""
        if self.sending_closed:
            raise RuntimeError("the session is closing")
        sent = self.down.push("text" if isinstance(message, str) else "binary", message)
        self._down_bytes += sent.size
        return sent

    def push_close(self, code: int | None, reason: str, now: float) -> None:
        """Our half of the closing handshake (once; later calls do nothing)."""
        if self.sending_closed:
            return
        self.local_close = self.down.push("close", _truncate(reason), code)
        self._check_finished(now)

    def pop(self) -> Inbound | None:
        """The next message for the application, or None."""
        if not self.inbox:
            return None
        item = self.inbox.popleft()
        if isinstance(item, str | bytes):
            self._inbox_bytes -= len(item)
        return item

    # -- requests ---------------------------------------------------------------

    def ack_down(self, seq: int, now: float) -> None:
        """The client has taken downstream messages up to ``seq``."""
        if seq > self.down.last_seq:
            raise FallbackProtocolError(
                f"ack {seq} for a message never sent (last {self.down.last_seq})"
            )
        freed = sum(m.size for m in self.down.unacked() if m.seq <= seq)
        self.down.ack(seq)
        self._down_bytes -= freed
        self._check_finished(now)

    def pending_after(self, seq: int) -> list[FallbackMessage]:
        """Unacknowledged downstream messages numbered above ``seq``."""
        return list(self.down.unacked(max(seq, self.down.acked)))

    def take_upstream(self, batch: UpstreamBatch, now: float) -> int:
        """Apply one upstream POST; returns the upstream ack to answer.

        Raises :class:`SequenceGap` (nothing is taken then) or
        :class:`~tunnelws.fallback.FallbackProtocolError` for an impossible ack.
        """
        self.ack_down(batch.ack, now)
        new = [m for m in batch.messages if m.seq > self.up.received]
        for offset, message in enumerate(new):
            if message.seq != self.up.received + 1 + offset:
                raise SequenceGap(
                    f"message {message.seq} arrived after {self.up.received + offset}: "
                    "messages were lost"
                )
        self.backpressured = False
        for message in new:
            if message.kind == "close":
                if not self.remote_close_taken:
                    self.remote_close_taken = True
                    self._deliver(Close(message.code, str(message.data)))
            elif self.remote_close_taken or self.local_close is not None:
                pass  # data after a close is dropped, as WebSocket endpoints do
            elif message.size > self.limits.max_message_size:
                self.push_close(1009, f"message exceeds {self.limits.max_message_size} bytes", now)
            elif self._has_room():
                self._deliver(message.data)
            else:
                self.backpressured = True
                break
            self.up.accept(message)
        self._check_finished(now)
        return self.up.received

    def room_again(self) -> bool:
        """True once after a partly taken POST, when the application has made
        room: the moment to tell the client with an ``ack`` event."""
        if self.backpressured and self._has_room():
            self.backpressured = False
            return True
        return False

    def _has_room(self) -> bool:
        if not self.inbox:
            return True
        return len(self.inbox) < self.limits.window and self._inbox_bytes < self.buffer_bytes

    def _deliver(self, item: Inbound) -> None:
        self.inbox.append(item)
        if isinstance(item, str | bytes):
            self._inbox_bytes += len(item)

    # -- lifetime -------------------------------------------------------------------

    def _check_finished(self, now: float) -> None:
        closes_taken = (
            self.remote_close_taken
            and self.local_close is not None
            and self.down.acked >= self.local_close.seq
        )
        if closes_taken and self.finished_at is None:
            self.finished_at = now

    def expired(self, now: float) -> bool:
        return self.open_requests == 0 and now - self.last_activity > self.limits.expires

    def forgettable(self, now: float) -> bool:
        """Both closes were taken a heartbeat ago, or the session expired."""
        if self.ended is not None or self.expired(now):
            return True
        return self.finished_at is not None and now - self.finished_at >= self.limits.heartbeat

    def end(self, reason: str) -> None:
        """The session is gone without a closing handshake: the application
        sees 1006 (unless it already saw the client's close)."""
        if self.ended is not None:
            return
        self.ended = Close(LOST_CODE, reason, clean=False)
        if not self.remote_close_taken:
            self.inbox.append(self.ended)


def _truncate(reason: str) -> str:
    # The close reason has WebSocket's limit (123 bytes of UTF-8).
    return reason.encode()[:123].decode(errors="ignore")
