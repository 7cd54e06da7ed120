"""``/timestamp``: a server-sent events stream of UTC timestamps.

The parameter parsing and event formatting are pure functions; only
:func:`stream_timestamps` touches the network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import parse_qs

import h11
import trio

from ._http import HTTPConnection, response

MIN_INTERVAL = 0.01
DEFAULT_INTERVAL = 1.0
DEFAULT_RETRY_MS = 3000
DEFAULT_HEARTBEAT = 15.0


class StreamParameterError(ValueError):
    """A query parameter of ``/timestamp`` is invalid (answered with 400)."""


@dataclass(frozen=True)
class TimestampStream:
    """What one ``/timestamp`` response sends.

    The stream's events have ids ``1..count`` (endless without ``count``);
    this response starts at ``first_id`` and stops after ``close_after``
    events, or at ``count``, whichever comes first.
    """

    interval: float = DEFAULT_INTERVAL
    count: int | None = None
    event_type: str | None = None
    retry_ms: int = DEFAULT_RETRY_MS
    heartbeat: float = DEFAULT_HEARTBEAT
    close_after: int | None = None
    first_id: int = 1
    resumed_from: str | None = None

    @property
    def finished(self) -> bool:
        """True when a resumed stream has nothing left (answered with 204)."""
        return self.count is not None and self.first_id > self.count

    @property
    def last_id(self) -> int | None:
        """Id of the last event of this response, ``None`` for endless."""
        ends = []
        if self.count is not None:
            ends.append(self.count)
        if self.close_after is not None:
            ends.append(self.first_id + self.close_after - 1)
        return min(ends) if ends else None


def _number(params: dict[str, list[str]], name: str) -> float | None:
    values = params.get(name)
    if not values:
        return None
    try:
        value = float(values[-1])
    except ValueError:
        raise StreamParameterError(f"{name} must be a number, got {values[-1]!r}") from None
    if not math.isfinite(value) or value < 0:
        raise StreamParameterError(f"{name} must be a finite number >= 0")
    return value


def _integer(params: dict[str, list[str]], name: str, minimum: int) -> int | None:
    values = params.get(name)
    if not values:
        return None
    text = values[-1]
    if not text.isdigit() or int(text) < minimum:
        raise StreamParameterError(f"{name} must be an integer >= {minimum}, got {text!r}")
    return int(text)


def parse_stream_request(query: str, last_event_id: str | None) -> TimestampStream:
    """Build the stream plan from the query string and ``Last-Event-ID``.

    Query parameters: ``interval`` (seconds, fractions allowed, at least
    0.01), ``count``, ``event`` (event type), ``retry`` (milliseconds),
    ``heartbeat`` (seconds between comment lines while idle, 0 = none) and
    ``close_after`` (end this response early so clients must reconnect and
    resume). A numeric ``Last-Event-ID: N`` resumes at N+1; any other value is
    ignored (and mentioned in a comment).
    """
    params = parse_qs(query, keep_blank_values=True)
    interval = _number(params, "interval")
    if interval is None:
        interval = DEFAULT_INTERVAL
    if interval < MIN_INTERVAL:
        raise StreamParameterError(f"interval must be at least {MIN_INTERVAL} seconds")
    heartbeat = _number(params, "heartbeat")
    event_values = params.get("event")
    event_type = event_values[-1] if event_values else None
    if event_type is not None and (
        not event_type or any(c in event_type for c in "\r\n\0")
    ):
        raise StreamParameterError("event must be non-empty without CR, LF or NUL")
    retry = _integer(params, "retry", 0)
    first_id = 1
    if last_event_id is not None and last_event_id.strip().isdigit():
        first_id = int(last_event_id.strip()) + 1
    return TimestampStream(
        interval=interval,
        count=_integer(params, "count", 0),
        event_type=event_type,
        retry_ms=DEFAULT_RETRY_MS if retry is None else retry,
        heartbeat=DEFAULT_HEARTBEAT if heartbeat is None else heartbeat,
        close_after=_integer(params, "close_after", 1),
        first_id=first_id,
        resumed_from=last_event_id,
    )


def utc_timestamp(moment: datetime | None = None) -> str:
    """ISO 8601 UTC with milliseconds, e.g. ``2025-01-31T12:00:00.250Z``."""
    moment = moment or datetime.now(timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


def format_event(event_id: int, data: str, event_type: str | None = None) -> bytes:
    """One event block; ``data`` must not contain line breaks."""
    lines = [f"id: {event_id}"]
    if event_type is not None:
        lines.append(f"event: {event_type}")
    lines.append(f"data: {data}")
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def format_comment(text: str) -> bytes:
    return f": {text}\n\n".encode()


def stream_preamble(plan: TimestampStream) -> bytes:
    """``retry:`` first (so it applies before any event), then a resume note."""
    preamble = f"retry: {plan.retry_ms}\n\n".encode()
    if plan.resumed_from is not None:
        if plan.first_id > 1:
            preamble += format_comment(f"resuming after id {plan.first_id - 1}")
        else:
            preamble += format_comment("Last-Event-ID is not a number; starting at 1")
    return preamble


async def stream_timestamps(http: HTTPConnection, plan: TimestampStream, head_only: bool) -> None:
    """Send the SSE response; each event is written (and flushed) when due.

    Events are scheduled on a fixed grid from the start (no drift); comments
    keep idle proxies from timing out when the interval is long. The response
    ends the connection, as browsers reconnect on a new one anyway.
    """
    if plan.finished:
        # 204 is the standard "no more events": EventSource stops reconnecting.
        await http.send_body(204, [("Connection", "close")], b"", content_type="")
        return
    headers = [
        ("Content-Type", "text/event-stream; charset=utf-8"),
        ("Cache-Control", "no-cache"),
        ("X-Accel-Buffering", "no"),  # ask buffering reverse proxies to stream
        ("Connection", "close"),
    ]
    await http.send(response(200, headers))
    if head_only:
        await http.send(h11.EndOfMessage())
        return

    async def produce() -> None:
        await http.send(h11.Data(data=stream_preamble(plan)))
        due = trio.current_time()
        event_id = plan.first_id
        last_id = plan.last_id
        while last_id is None or event_id <= last_id:
            while plan.heartbeat > 0 and due - trio.current_time() > plan.heartbeat:
                await trio.sleep(plan.heartbeat)
                await http.send(h11.Data(data=format_comment(f"heartbeat {utc_timestamp()}")))
            await trio.sleep_until(due)
            event = format_event(event_id, utc_timestamp(), plan.event_type)
            await http.send(h11.Data(data=event))
            event_id += 1
            due += plan.interval
        await http.send(h11.EndOfMessage())

    await http.run_until_disconnect(produce)
