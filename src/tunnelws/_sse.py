"""The Server-Sent Events wire format (``text/event-stream``): bytes in, events out.

A pure parser in the style of h11 and wsproto: no sockets, no trio, no clock.
It follows the WHATWG HTML standard's "interpreting an event stream" to the
letter, including the rules clients most often get wrong:

* one leading byte order mark is stripped, even when it arrives split across
  feeds; UTF-8 is decoded with replacement characters, also for a multibyte
  character split across feeds;
* CR, LF and CRLF all end a line, also when the CR and the LF arrive in
  different feeds; U+2028 and the other Unicode line separators do not;
* a line starting with ``:`` is a comment; a line without a colon is a field
  name with an empty value; exactly one space after the colon is stripped;
* ``data`` lines are joined with LF; ``id`` values containing NUL are ignored;
  ``retry`` is taken only when it is all ASCII digits;
* a blank line dispatches the event; an event without data is not dispatched
  but its ``id`` still becomes the last event ID; the event type resets after
  every dispatch; an unterminated event at end of stream is discarded.

Memory is bounded: a line or an event larger than ``max_event_size``
characters raises :class:`EventTooLargeError` instead of growing without limit.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

__all__ = [
    "DEFAULT_MAX_EVENT_SIZE",
    "EventStreamParser",
    "EventTooLargeError",
    "ServerSentEvent",
]

# Browsers impose no limit at all; 8 Mi characters is far beyond any event a
# real server sends (even base64 images) yet keeps a runaway or hostile
# stream from taking the process's memory.
DEFAULT_MAX_EVENT_SIZE = 8 * 1024 * 1024

# Only these three end a line: str.splitlines() would also split on U+2028,
# U+0085, form feed and others, which the standard says are ordinary text.
_LINE_END = re.compile(r"\r\n|\r|\n")
_BOM = "\ufeff"
# A retry beyond this (about 31 years in milliseconds) means "effectively never".
_MAX_RETRY_DIGITS = 12
_MAX_RETRY = 10**_MAX_RETRY_DIGITS - 1


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event.

    ``type`` is the ``event`` field (``"message"`` when the server sent none),
    ``data`` the ``data`` lines joined with LF, and ``id`` the last event ID in
    effect when the event was dispatched (``""`` when the server never set one
    or reset it with an empty ``id``), as in the browser's
    ``MessageEvent.lastEventId``.
    """

    type: str = "message"
    data: str = ""
    id: str = ""


class EventTooLargeError(ValueError):
    """A line or an event exceeded the parser's ``max_event_size``.

    The stream cannot be resynchronised after this: the rest of the oversized
    line is indistinguishable from the start of a new one, so the connection
    should be dropped.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(f"event stream line or event exceeds the limit of {limit} characters")
        self.limit = limit


class EventStreamParser:
    """Incremental parser for one ``text/event-stream`` body after another.

    Feed it the body bytes as they arrive with :meth:`feed`; it returns the
    events completed by those bytes. Call :meth:`feed_eof` when the connection
    ends: it discards the unterminated event and readies the parser for the
    body of the next connection, keeping :attr:`last_event_id` and
    :attr:`retry` (which the reconnection needs).

    ``last_event_id`` seeds the last event ID, for resuming a stream a
    previous process was reading.
    """

    def __init__(
        self, *, last_event_id: str = "", max_event_size: int = DEFAULT_MAX_EVENT_SIZE
    ) -> None:
        if max_event_size < 1:
            raise ValueError("max_event_size must be positive")
        self.max_event_size = max_event_size
        self.last_event_id = last_event_id
        #: The reconnection time in milliseconds from the last valid ``retry``
        #: field, or ``None`` while the server has not sent one.
        self.retry: int | None = None
        self._start_stream()

    def _start_stream(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._at_stream_start = True
        self._after_cr = False
        self._line_parts: list[str] = []
        self._line_size = 0
        self._data_lines: list[str] = []
        self._data_size = 0
        self._event_type = ""
        # Browsers carry the last event ID into the next connection's buffer,
        # so an event without ``id`` after a reconnect keeps the resumed ID.
        self._id_buffer = self.last_event_id

    def feed(self, data: bytes) -> list[ServerSentEvent]:
        """Consume body bytes; return the events they complete, in order.

        Raises :class:`EventTooLargeError` when a line or an event grows past
        ``max_event_size`` characters.
        """
        text = self._decoder.decode(data)
        if not text:
            # Nothing decoded yet (an incomplete UTF-8 sequence): keep the
            # CR state, the next text may still start with the LF of a CRLF.
            return []
        if self._at_stream_start:
            self._at_stream_start = False
            if text.startswith(_BOM):
                text = text[1:]
        start = 1 if self._after_cr and text.startswith("\n") else 0
        self._after_cr = text.endswith("\r")
        events: list[ServerSentEvent] = []
        for match in _LINE_END.finditer(text, start):
            line = "".join(self._line_parts) + text[start : match.start()]
            self._line_parts.clear()
            self._line_size = 0
            event = self._process_line(line)
            if event is not None:
                events.append(event)
            start = match.end()
        rest = text[start:]
        if rest:
            self._line_parts.append(rest)
            self._line_size += len(rest)
            self._check_size()
        return events

    def feed_eof(self) -> list[ServerSentEvent]:
        """End the current stream: an unterminated event is discarded.

        Always returns an empty list (the standard never dispatches at end of
        stream); it returns a list so callers can treat both calls alike.
        Afterwards the parser accepts the next connection's body, with the
        byte order mark check rearmed.
        """
        self._start_stream()
        return []

    def _check_size(self) -> None:
        if self._line_size + self._data_size > self.max_event_size:
            raise EventTooLargeError(self.max_event_size)

    def _process_line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # comment, typically a keep-alive
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data_lines.append(value)
            self._data_size += len(value) + 1
            self._check_size()
        elif name == "event":
            self._event_type = value
        elif name == "id":
            if "\0" not in value:
                self._id_buffer = value
        elif name == "retry" and value.isascii() and value.isdigit():
            # (isdigit() alone would accept other scripts' digits and "²".)
            # Leading zeros are legal; absurdly long values saturate rather
            # than hit int()'s digit limit.
            digits = value.lstrip("0") or "0"
            self.retry = int(digits) if len(digits) <= _MAX_RETRY_DIGITS else _MAX_RETRY
        # Any other field name is ignored, as the standard requires.
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        self.last_event_id = self._id_buffer
        data_lines, event_type = self._data_lines, self._event_type
        self._data_lines = []
        self._data_size = 0
        self._event_type = ""
        if not data_lines:
            return None
        return ServerSentEvent(
            type=event_type or "message", data="\n".join(data_lines), id=self.last_event_id
        )
