"""The HTTP fallback protocol's wire format and delivery windows, Sans-IO.

Shared by both ends (the client in ``tunnelws``, the origin server and the
gateway in the test network), so there is one implementation of what a
message looks like on the wire and of exactly-once, ordered delivery. The
protocol itself is specified in ``docs/fallback-protocol.md``; this module is
its executable half. No sockets, no clock.

Delivery in one direction is a :class:`SendWindow` at the sender and a
:class:`ReceiveWindow` at the receiver: every message gets the next sequence
number, the sender keeps it until the receiver acknowledges it (so it can be
sent again after a broken request), and the receiver takes each number exactly
once, in order, dropping repeats and refusing gaps.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from ._sse import ServerSentEvent

__all__ = [
    "FALLBACK_VERSION",
    "PATH_MARKER",
    "UPSTREAM_OVERHEAD",
    "Ack",
    "End",
    "FallbackMessage",
    "FallbackPath",
    "FallbackProtocolError",
    "Heartbeat",
    "OpenAnswer",
    "OpenRequest",
    "ReceiveWindow",
    "SendWindow",
    "SessionLimits",
    "UpstreamBatch",
    "decode_down_event",
    "decode_error",
    "decode_open_answer",
    "decode_up_answer",
    "decode_upstream",
    "encode_ack_event",
    "encode_end_event",
    "encode_heartbeat",
    "encode_message_event",
    "encode_message_json",
    "encode_open_request",
    "encode_upstream",
    "encode_upstream_within",
    "fallback_path",
    "parse_fallback_path",
    "valid_session_id",
]

FALLBACK_VERSION = 1
#: The path segment that marks fallback requests, after the WebSocket path.
PATH_MARKER = "_tunnelws"

MessageKind = Literal["text", "binary", "close"]
Endpoint = Literal["open", "down", "up"]


class FallbackProtocolError(ValueError):
    """Bytes or numbers that break the fallback protocol (the peer's fault)."""


# -- paths -----------------------------------------------------------------------


@dataclass(frozen=True)
class FallbackPath:
    """A parsed fallback request path: the WebSocket ``resource`` it belongs
    to, the ``endpoint`` and, for ``down``/``up``, the ``session`` id."""

    resource: str
    endpoint: Endpoint
    session: str | None = None


def fallback_path(resource: str, endpoint: Endpoint, session: str | None = None) -> str:
    """The request path of ``endpoint`` for the WebSocket ``resource``
    (``/echo?x=1`` -> ``/echo/_tunnelws/1/open?x=1``)."""
    path, query_mark, query = resource.partition("?")
    base = f"{path.rstrip('/')}/{PATH_MARKER}/{FALLBACK_VERSION}"
    if endpoint == "open":
        tail = "open"
    else:
        if not session:
            raise ValueError(f"the {endpoint} endpoint needs a session id")
        tail = f"{session}/{endpoint}"
    return f"{base}/{tail}" + (f"?{query}" if query_mark and endpoint == "open" else "")


def parse_fallback_path(target: str) -> FallbackPath | None:
    """Read a request target; None when it is not a fallback request.

    A fallback request of an unknown version raises
    :class:`FallbackProtocolError` (the server answers 400).
    """
    path, _, query = target.partition("?")
    marker = f"/{PATH_MARKER}/"
    index = path.find(marker)
    if index < 0:
        return None
    resource = path[:index] or "/"
    parts = path[index + len(marker) :].split("/")
    if parts[0] != str(FALLBACK_VERSION):
        raise FallbackProtocolError(f"unsupported fallback protocol version {parts[0]!r}")
    if parts[1:] == ["open"]:
        return FallbackPath(resource + (f"?{query}" if query else ""), "open")
    if len(parts) == 3 and parts[2] in ("down", "up") and valid_session_id(parts[1]):
        return FallbackPath(resource, parts[2], parts[1])  # type: ignore[arg-type]
    raise FallbackProtocolError(f"not a fallback endpoint: {path!r}")


def valid_session_id(session: str) -> bool:
    """1 to 64 characters of ``A-Z a-z 0-9 - _`` (a path segment as is)."""
    return _SESSION_ID.fullmatch(session) is not None


# A regular expression: a generator over the characters was 3 % of the
# server's time per upstream request.
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


# -- session limits --------------------------------------------------------------


@dataclass(frozen=True)
class SessionLimits:
    """What the server announces when it opens a session (all times in
    seconds, sizes in bytes, ``window`` in messages)."""

    #: A heartbeat event at least this often on the downstream.
    heartbeat: float = 5.0
    #: A streamed downstream response ends after this many bytes...
    max_stream_bytes: int = 128 * 1024
    #: ...or after this many seconds; the client reconnects at once.
    max_stream_seconds: float = 25.0
    #: A long-poll request is answered after at most this long.
    poll_timeout: float = 5.0
    #: Unacknowledged messages a sender may have in flight, each direction.
    window: int = 256
    #: Largest upstream request body.
    max_batch_bytes: int = 1024 * 1024
    #: Largest single message (as the WebSocket's max_message_size).
    max_message_size: int = 16 * 1024 * 1024
    #: The session ends this long after its last request.
    expires: float = 30.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SessionLimits:
        """Known fields only (a newer server may add some); types checked."""
        values: dict[str, Any] = {}
        for field_ in fields(cls):
            if field_.name not in data:
                continue
            value = data[field_.name]
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise FallbackProtocolError(f"bad session limit {field_.name}={value!r}")
            values[field_.name] = float(value) if field_.type == "float" else int(value)
        return cls(**values)


# -- messages ---------------------------------------------------------------------


@dataclass(frozen=True)
class FallbackMessage:
    """One sequenced message: text, binary, or the close (code and reason)."""

    seq: int
    kind: MessageKind
    data: str | bytes = ""
    code: int | None = None

    @property
    def size(self) -> int:
        return len(self.data)

    def to_json(self) -> dict[str, Any]:
        if self.kind == "binary":
            assert isinstance(self.data, bytes)
            return {"seq": self.seq, "type": "binary", "data": base64.b64encode(self.data).decode()}
        if self.kind == "close":
            return {"seq": self.seq, "type": "close", "code": self.code, "reason": self.data}
        return {"seq": self.seq, "type": "text", "data": self.data}

    @classmethod
    def from_json(cls, item: Any, max_message_size: int) -> FallbackMessage:
        if not isinstance(item, dict):
            raise FallbackProtocolError("a message must be a JSON object")
        seq, kind = item.get("seq"), item.get("type")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            raise FallbackProtocolError(f"bad sequence number {seq!r}")
        if kind == "close":
            code, reason = item.get("code"), item.get("reason", "")
            if code is not None and (isinstance(code, bool) or not isinstance(code, int)):
                raise FallbackProtocolError(f"bad close code {code!r}")
            if not isinstance(reason, str) or len(reason.encode()) > 123:
                raise FallbackProtocolError("bad close reason")
            return cls(seq, "close", reason, code)
        data = item.get("data")
        if kind not in ("text", "binary") or not isinstance(data, str):
            raise FallbackProtocolError(f"bad message type {kind!r} or data")
        if kind == "binary":
            try:
                payload: str | bytes = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                raise FallbackProtocolError("binary data is not base64") from None
        else:
            payload = data
        if len(payload) > max_message_size:
            raise FallbackProtocolError(f"message exceeds {max_message_size} bytes")
        return cls(seq, kind, payload)


@dataclass(frozen=True)
class UpstreamBatch:
    """The body of one upstream POST: the client's downstream ``ack`` and
    the messages it sends (possibly none: a pure acknowledgement)."""

    ack: int
    messages: tuple[FallbackMessage, ...] = ()


def encode_upstream(ack: int, messages: Iterable[FallbackMessage]) -> bytes:
    body = {"ack": ack, "messages": [message.to_json() for message in messages]}
    return json.dumps(body, separators=(",", ":")).encode()


def encode_message_json(message: FallbackMessage) -> bytes:
    """One message as it appears in an upstream body's ``messages`` list,
    text as UTF-8 (not ``\\u`` escapes: a batch holds six times less
    non-ASCII text that way). Text that is not Unicode (lone surrogates)
    raises :class:`UnicodeEncodeError`, as for a WebSocket."""
    return json.dumps(message.to_json(), separators=(",", ":"), ensure_ascii=False).encode()


def encode_upstream_within(ack: int, encoded: Iterable[bytes], max_bytes: int) -> tuple[bytes, int]:
    """An upstream body of at most ``max_bytes`` from messages already
    encoded with :func:`encode_message_json`, in order: the body and how many
    messages it holds (as many as fit, but at least one, so that a sender
    always makes progress; the sender keeps single messages below the limit).
    Decodes as :func:`encode_upstream`'s body for the same messages does."""
    head = b'{"ack":%d,"messages":[' % ack
    parts: list[bytes] = []
    size = len(head) + 2
    for item in encoded:
        if parts and size + len(item) + 1 > max_bytes:
            break
        parts.append(item)
        size += len(item) + (1 if len(parts) > 1 else 0)
    return head + b",".join(parts) + b"]}", len(parts)


#: Bytes an upstream body adds around a single message (ack of 18 digits).
UPSTREAM_OVERHEAD = len(b'{"ack":999999999999999999,"messages":[]}')


def decode_upstream(body: bytes, limits: SessionLimits) -> UpstreamBatch:
    if len(body) > limits.max_batch_bytes:
        raise FallbackProtocolError(f"upstream batch exceeds {limits.max_batch_bytes} bytes")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise FallbackProtocolError("upstream body is not JSON") from None
    if not isinstance(data, dict):
        raise FallbackProtocolError("upstream body must be a JSON object")
    ack, items = data.get("ack", 0), data.get("messages", [])
    if isinstance(ack, bool) or not isinstance(ack, int) or ack < 0:
        raise FallbackProtocolError(f"bad ack {ack!r}")
    if not isinstance(items, list):
        raise FallbackProtocolError("messages must be a list")
    messages = tuple(FallbackMessage.from_json(i, limits.max_message_size) for i in items)
    return UpstreamBatch(ack, messages)


# -- downstream events (SSE framing) ---------------------------------------------------


@dataclass(frozen=True)
class Ack:
    """The server has received upstream messages up to ``seq``."""

    seq: int


@dataclass(frozen=True)
class Heartbeat:
    """Proof of life on the downstream (and of no buffering, when on time)."""


@dataclass(frozen=True)
class End:
    """The server ends this downstream response on purpose: reconnect."""


DownEvent = FallbackMessage | Ack | Heartbeat | End


def _sse(event: str, data: str, seq: int | None = None) -> bytes:
    lines = [f"event: {event}"]
    if seq is not None:
        lines.append(f"id: {seq}")
    # SSE carries line breaks only as separate data lines (CR alone too).
    lines.extend(f"data: {line}" for line in data.replace("\r\n", "\n").split("\n"))
    return ("\n".join(lines) + "\n\n").encode()


def encode_message_event(message: FallbackMessage) -> bytes:
    if message.kind == "binary":
        assert isinstance(message.data, bytes)
        return _sse("binary", base64.b64encode(message.data).decode(), message.seq)
    if message.kind == "close":
        body = json.dumps({"code": message.code, "reason": message.data})
        return _sse("close", body, message.seq)
    assert isinstance(message.data, str)
    if "\r" in message.data:
        # A lone CR would end an SSE line and a CRLF would become LF: send
        # such text as JSON, which keeps every character.
        return _sse("text-json", json.dumps(message.data), message.seq)
    return _sse("text", message.data, message.seq)


def encode_ack_event(seq: int) -> bytes:
    return _sse("ack", str(seq))


def encode_heartbeat() -> bytes:
    return b"event: heartbeat\ndata:\n\n"


def encode_end_event() -> bytes:
    return b"event: end\ndata:\n\n"


def decode_down_event(event: ServerSentEvent, max_message_size: int) -> DownEvent | None:
    """One parsed SSE event as a protocol event; None for types this version
    does not know (ignored, so servers can add some)."""
    kind = event.type
    if kind == "heartbeat":
        return Heartbeat()
    if kind == "end":
        return End()
    if kind == "ack":
        return Ack(_number(event.data, "ack"))
    if kind not in ("text", "text-json", "binary", "close"):
        return None
    seq = _number(event.id, "event id")
    if kind == "close":
        try:
            body = json.loads(event.data)
        except ValueError:
            raise FallbackProtocolError("close event is not JSON") from None
        return FallbackMessage.from_json({"seq": seq, "type": "close", **body}, max_message_size)
    if kind == "text-json":
        try:
            text = json.loads(event.data)
        except ValueError:
            raise FallbackProtocolError("text-json event is not JSON") from None
        return FallbackMessage.from_json(
            {"seq": seq, "type": "text", "data": text}, max_message_size
        )
    return FallbackMessage.from_json(
        {"seq": seq, "type": kind, "data": event.data}, max_message_size
    )


def _number(text: str, what: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise FallbackProtocolError(f"bad {what} {text!r}")
    return int(text)


# -- delivery windows -------------------------------------------------------------------


class SendWindow:
    """The sending half of one direction: numbers messages and keeps each
    until it is acknowledged. ``window`` bounds the unacknowledged count, so
    memory stays bounded: :meth:`full` says when to stop taking messages."""

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError("window must be positive")
        self.window = window
        self._next = 1
        self._unacked: deque[FallbackMessage] = deque()
        self.acked = 0  # highest sequence number the peer confirmed

    def __len__(self) -> int:
        return len(self._unacked)

    @property
    def full(self) -> bool:
        return len(self._unacked) >= self.window

    @property
    def last_seq(self) -> int:
        return self._next - 1

    def push(
        self, kind: MessageKind, data: str | bytes, code: int | None = None
    ) -> FallbackMessage:
        """Number a new message (the caller checks :attr:`full` first)."""
        message = FallbackMessage(self._next, kind, data, code)
        self._next += 1
        self._unacked.append(message)
        return message

    def ack(self, seq: int) -> int:
        """Drop messages up to ``seq``; returns how many were dropped. An ack
        beyond what was sent is the peer's error; an old one is harmless."""
        if seq > self.last_seq:
            raise FallbackProtocolError(
                f"ack {seq} for a message never sent (last {self.last_seq})"
            )
        dropped = 0
        while self._unacked and self._unacked[0].seq <= seq:
            self._unacked.popleft()
            dropped += 1
        self.acked = max(self.acked, seq)
        return dropped

    def unacked(self, after: int = 0) -> Iterator[FallbackMessage]:
        """Unacknowledged messages numbered above ``after``, in order."""
        return (message for message in self._unacked if message.seq > after)


class ReceiveWindow:
    """The receiving half of one direction: takes each sequence number
    exactly once and in order."""

    def __init__(self) -> None:
        self.received = 0  # highest sequence number taken

    def accept(self, message: FallbackMessage) -> bool:
        """True for the next message (deliver it), False for a repeat of one
        already taken (drop it); a gap raises :class:`FallbackProtocolError`."""
        if message.seq <= self.received:
            return False
        if message.seq != self.received + 1:
            raise FallbackProtocolError(
                f"message {message.seq} arrived after {self.received}: messages were lost"
            )
        self.received = message.seq
        return True


# -- the client's side of open, answers, errors (JSON bodies) ---------------------------


@dataclass(frozen=True)
class OpenRequest:
    """The body of ``POST .../open``: what the upgrade request would have
    carried (offered subprotocols, extra handshake headers)."""

    subprotocols: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class OpenAnswer:
    """The server's ``201`` answer to an open: the session and its limits."""

    session: str
    subprotocol: str | None
    limits: SessionLimits
    extensions: tuple[str, ...] = ()


def encode_open_request(request: OpenRequest) -> bytes:
    body = {
        "version": FALLBACK_VERSION,
        "subprotocols": list(request.subprotocols),
        "headers": [[name, value] for name, value in request.headers],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def decode_open_answer(body: bytes) -> OpenAnswer:
    """The client's reading of a ``201``: raises :class:`FallbackProtocolError`
    for anything it cannot trust (wrong version, bad session id, bad limits)."""
    data = _json_object(body, "open answer")
    _check_version(data.get("version"))
    session = data.get("session")
    if not isinstance(session, str) or not valid_session_id(session):
        raise FallbackProtocolError(f"bad session id {session!r}")
    subprotocol = data.get("subprotocol")
    if subprotocol is not None and not isinstance(subprotocol, str):
        raise FallbackProtocolError(f"bad subprotocol {subprotocol!r}")
    extensions = data.get("extensions", [])
    if not isinstance(extensions, list) or not all(isinstance(e, str) for e in extensions):
        raise FallbackProtocolError("extensions must be a list of strings")
    limits = data.get("limits", {})
    if not isinstance(limits, dict):
        raise FallbackProtocolError("limits must be a JSON object")
    return OpenAnswer(session, subprotocol, SessionLimits.from_json(limits), tuple(extensions))


def decode_up_answer(body: bytes) -> int:
    """The upstream ``ack`` of a ``200`` answer to an upstream POST."""
    ack = _json_object(body, "upstream answer").get("ack")
    if isinstance(ack, bool) or not isinstance(ack, int) or ack < 0:
        raise FallbackProtocolError(f"bad ack {ack!r}")
    return ack


def decode_error(body: bytes) -> tuple[str | None, int | None]:
    """``(error, status)`` of an error body; ``(None, None)`` when it is not
    one (a proxy's HTML page, say)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(data, dict):
        return None, None
    error, status = data.get("error"), data.get("status")
    return (
        error[:300] if isinstance(error, str) else None,
        status if isinstance(status, int) and not isinstance(status, bool) else None,
    )


def _check_version(version: object) -> None:
    if version != FALLBACK_VERSION or isinstance(version, bool):
        raise FallbackProtocolError(f"unsupported fallback protocol version {version!r}")


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise FallbackProtocolError(f"the {what} is not JSON") from None
    if not isinstance(data, dict):
        raise FallbackProtocolError(f"the {what} must be a JSON object")
    return data
