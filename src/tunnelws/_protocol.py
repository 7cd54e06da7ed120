"""The client side of an open WebSocket, Sans-IO: bytes in, events out;
messages in, bytes out.

wsproto does the opening handshake; after it this small state machine takes
over, because the client needs three things wsproto's frame layer does not
give: decompression bounded by ``max_message_size`` (a compression bomb
must cost no memory), a size check before a large frame is buffered, and a
short path per message (one parse, one copy, whole messages out).

Protocol violations by the server become a :class:`Failure` event carrying
the close code to fail the connection with (1002, 1007 or 1009); nothing
after it is parsed.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from ._deflate import Deflate, DeflateParameters, Deflater, InflateError, Inflater, TooBig
from ._frames import (
    OPCODE_CLOSE,
    OPCODE_CONTINUATION,
    OPCODE_PING,
    OPCODE_PONG,
    OPCODE_TEXT,
    HeaderError,
    encode_frame,
    parse_header,
)

__all__ = [
    "ClientProtocol",
    "Close",
    "Failure",
    "NotOpen",
    "Ping",
    "Pong",
    "State",
]

MAX_CLOSE_REASON_BYTES = 123  # a control frame's 125 bytes minus the code
_CLOSE_CODE = struct.Struct("!H")
# Codes a peer may send (RFC 6455 7.4 and the IANA registry); 3000-4999 are
# for libraries and applications.
_VALID_CLOSE_CODES = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)
# Codes that only describe a local observation and are never sent.
_LOCAL_ONLY_CODES = frozenset({1005, 1006, 1015})


class State(enum.Enum):
    OPEN = 1
    REMOTE_CLOSING = 2  # the server sent Close; ours is still to go
    LOCAL_CLOSING = 3  # we sent Close; the server's is still to come
    CLOSED = 4


@dataclass(slots=True)
class Ping:
    payload: bytes


@dataclass(slots=True)
class Pong:
    payload: bytes


@dataclass(slots=True)
class Close:
    """The server's Close frame (1005 when it carried no code)."""

    code: int
    reason: str


@dataclass(slots=True)
class Failure:
    """The server broke the protocol; fail the connection with ``code``."""

    code: int
    reason: str


Event = str | bytes | Ping | Pong | Close | Failure


class NotOpen(Exception):
    """A frame cannot be sent in the connection's current state."""


class ClientProtocol:
    """One client connection after a successful handshake."""

    def __init__(
        self,
        *,
        max_message_size: int,
        deflate: DeflateParameters | None = None,
        settings: Deflate | None = None,
    ) -> None:
        self.state = State.OPEN
        self._max_size = max_message_size
        self._buffer = b""
        self._failed = False
        # The data frame being received: payload bytes still to come.
        self._remaining = 0
        self._fin = False
        # The message being received: its opcode (0 when between messages).
        self._opcode = 0
        self._compressed = False
        self._pieces: list[bytes | memoryview] = []
        self._size = 0
        self._deflater: Deflater | None = None
        self._inflater: Inflater | None = None
        if deflate is not None:
            self._deflater = Deflater(
                settings or Deflate(),
                deflate.client_max_window_bits,
                deflate.client_no_context_takeover,
            )
            self._inflater = Inflater(
                deflate.server_max_window_bits, deflate.server_no_context_takeover
            )

    # -- receiving -------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray) -> list[Event]:
        """Parse ``data`` (the next bytes from the server) into events."""
        events: list[Event] = []
        if self._failed or self.state in (State.REMOTE_CLOSING, State.CLOSED):
            return events  # nothing after a Close (or a failure) counts
        if type(data) is not bytes:
            data = bytes(data)
        buffer = self._buffer + data if self._buffer else data
        pos = 0
        end = len(buffer)
        try:
            while pos < end and not self._failed:
                remaining = self._remaining
                if remaining:
                    take = min(remaining, end - pos)
                    self._remaining = remaining - take
                    if self._remaining or not self._fin:
                        # Not the message's end: keep a view, copy once at the end.
                        piece: bytes | memoryview = (
                            buffer if take == end else memoryview(buffer)[pos : pos + take]
                        )
                    else:
                        piece = buffer if take == end and not pos else buffer[pos : pos + take]
                    pos += take
                    self._payload(piece, events)
                    continue
                header = parse_header(buffer, pos)
                if header is None:
                    break
                if header.opcode >= OPCODE_CLOSE:
                    stop = pos + header.size + header.length
                    if stop > end:
                        break  # control frames are handled whole
                    if header.rsv1:
                        raise HeaderError("RSV1 set on a control frame")
                    payload = buffer[pos + header.size : stop]
                    pos = stop
                    if self._control(header.opcode, payload, events):
                        break
                    continue
                pos += header.size
                self._start_frame(header.fin, header.rsv1, header.opcode, header.length, events)
        except HeaderError as exc:
            self._fail(events, 1002, str(exc))
        if self._failed or self.state in (State.REMOTE_CLOSING, State.CLOSED):
            self._buffer = b""
        else:
            self._buffer = buffer[pos:] if pos < end else b""
        return events

    def _start_frame(
        self, fin: bool, rsv1: bool, opcode: int, length: int, events: list[Event]
    ) -> None:
        if opcode == OPCODE_CONTINUATION:
            if not self._opcode:
                raise HeaderError("continuation frame without a message to continue")
            if rsv1:
                raise HeaderError("RSV1 set on a continuation frame")
        else:
            if self._opcode:
                raise HeaderError("new data frame inside a fragmented message")
            if rsv1 and self._inflater is None:
                raise HeaderError("RSV1 set but no extension was negotiated")
            self._opcode = opcode
            self._compressed = rsv1
        # Uncompressed, the frame's declared length is what it will cost:
        # refuse before buffering any of it.
        if not self._compressed and self._size + length > self._max_size:
            self._too_big(events)
            return
        self._fin = fin
        self._remaining = length
        if not length:
            self._payload(b"", events)

    def _payload(self, piece: bytes | memoryview, events: list[Event]) -> None:
        last = self._fin and not self._remaining
        if self._compressed:
            inflater = self._inflater
            assert inflater is not None
            try:
                if not last:
                    inflater.feed(piece, self._max_size)
                    return
                message = inflater.finish(self._max_size, bytes(piece))  # bytes already
            except TooBig:
                self._too_big(events)
                return
            except InflateError as exc:
                self._fail(events, 1007, str(exc))
                return
        else:
            if not last:
                if piece:
                    self._pieces.append(piece)
                    self._size += len(piece)
                return
            if self._pieces:
                self._pieces.append(piece)
                message = b"".join(self._pieces)
                self._pieces = []
                self._size = 0
            else:
                message = bytes(piece)  # already bytes: no copy
        opcode, self._opcode = self._opcode, 0
        if opcode == OPCODE_TEXT:
            try:
                events.append(message.decode())
            except UnicodeDecodeError:
                self._fail(events, 1007, "a text message is not valid UTF-8")
        else:
            events.append(message)

    def _control(self, opcode: int, payload: bytes, events: list[Event]) -> bool:
        """Handle a control frame; True when parsing must stop."""
        if opcode == OPCODE_PING:
            events.append(Ping(bytes(payload)))
        elif opcode == OPCODE_PONG:
            events.append(Pong(bytes(payload)))
        else:
            close = _parse_close(payload)
            if isinstance(close, Failure):
                self._fail(events, close.code, close.reason)
                return True
            self.state = State.CLOSED if self.state is State.LOCAL_CLOSING else State.REMOTE_CLOSING
            events.append(close)
            return True
        return False

    def _too_big(self, events: list[Event]) -> None:
        self._fail(events, 1009, f"message bigger than {self._max_size} bytes")

    def _fail(self, events: list[Event], code: int, reason: str) -> None:
        self._failed = True
        self._remaining = 0
        self._pieces = []
        events.append(Failure(code, reason))

    # -- sending ---------------------------------------------------------------

    def send_message(self, payload: bytes, opcode: int) -> bytes:
        """A text or binary message as one frame (compressed if negotiated)."""
        if self.state is not State.OPEN:
            raise NotOpen
        deflater = self._deflater
        if deflater is None:
            return encode_frame(opcode, payload)
        return encode_frame(opcode, deflater.compress(payload), rsv1=True)

    def send_ping(self, payload: bytes) -> bytes:
        if self.state is not State.OPEN:
            raise NotOpen
        return encode_frame(OPCODE_PING, payload)

    def send_pong(self, payload: bytes) -> bytes:
        if self.state is not State.OPEN:
            raise NotOpen
        return encode_frame(OPCODE_PONG, payload)

    def send_close(self, code: int | None = 1000, reason: str = "") -> bytes:
        """Our Close frame; ``None`` (or 1005, as received) sends no code."""
        if self.state is State.OPEN:
            self.state = State.LOCAL_CLOSING
        elif self.state is State.REMOTE_CLOSING:
            self.state = State.CLOSED
        else:
            raise NotOpen
        if code is None or code == 1005:
            return encode_frame(OPCODE_CLOSE, b"")
        if code in _LOCAL_ONLY_CODES:
            code = 1000
        encoded = reason.encode()[:MAX_CLOSE_REASON_BYTES]
        encoded = encoded.decode(errors="ignore").encode()  # no cut characters
        return encode_frame(OPCODE_CLOSE, _CLOSE_CODE.pack(code) + encoded)


def _parse_close(payload: bytes) -> Close | Failure:
    if not payload:
        return Close(1005, "")
    if len(payload) == 1:
        return Failure(1002, "a Close frame with a 1-byte payload")
    (code,) = _CLOSE_CODE.unpack_from(payload)
    if code not in _VALID_CLOSE_CODES and not 3000 <= code <= 4999:
        return Failure(1002, f"a Close frame with the invalid code {code}")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError:
        return Failure(1007, "a Close reason that is not valid UTF-8")
    return Close(code, reason)
