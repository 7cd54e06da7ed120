"""WebSocket endpoints: the opening handshake (pure) and the echo loop (trio).

h11 parses the upgrade request and sends the 101; wsproto's post-handshake
``Connection`` then speaks frames. Doing the handshake here rather than in
wsproto lets one port serve plain HTTP paths and WebSocket paths alike.

permessage-deflate is the client library's codec (one implementation, with
its bounded decompression) plugged into wsproto's extension hooks.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import h11
import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    TextMessage,
)
from wsproto.extensions import Extension
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits
from wsproto.utilities import generate_accept_token

from tunnelws.deflate import (
    EXTENSION_NAME,
    Deflate,
    DeflateParameters,
    Deflater,
    InflateError,
    Inflater,
    TooBig,
    accept_offer,
)

from ._http import ClientGone, HTTPConnection

WEBSOCKET_VERSION = "13"
MAX_CLOSE_REASON_BYTES = 123  # 125-byte control frame payload minus the code


@dataclass(frozen=True)
class HandshakeAccepted:
    """The upgrade request is valid: answer 101 with these values."""

    accept_token: str
    subprotocol: str | None
    offered_subprotocols: tuple[str, ...]
    #: The client's Sec-WebSocket-Extensions offers, as sent.
    offered_extensions: tuple[str, ...] = ()
    #: permessage-deflate as agreed (None: no compression).
    deflate: DeflateParameters | None = None


@dataclass(frozen=True)
class HandshakeRejected:
    """The request is not a usable WebSocket upgrade: answer with ``status``."""

    status: int
    message: str
    headers: tuple[tuple[str, str], ...] = ()


def _comma_values(request: h11.Request, name: bytes) -> list[str]:
    values: list[str] = []
    for header_name, value in request.headers:
        if header_name == name:
            values.extend(v.strip() for v in value.decode("latin-1").split(","))
    return [v for v in values if v]


def _header(request: h11.Request, name: bytes) -> str | None:
    for header_name, value in request.headers:
        if header_name == name:
            return value.decode("latin-1").strip()
    return None


def is_upgrade_request(request: h11.Request) -> bool:
    """True when the client asks to switch to WebSocket (valid or not)."""
    return any(v.lower() == "websocket" for v in _comma_values(request, b"upgrade"))


def check_handshake(
    request: h11.Request, *, compression: bool = True
) -> HandshakeAccepted | HandshakeRejected:
    """Validate an opening handshake (RFC 6455 section 4.2.1) and pick a subprotocol.

    The first subprotocol the client offers is selected, so clients can check
    their own negotiation logic against a predictable server; so is the
    first usable permessage-deflate offer when ``compression`` is on.
    """
    upgrade_required = (
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", WEBSOCKET_VERSION),
    )
    if not is_upgrade_request(request):
        return HandshakeRejected(
            426,
            "This endpoint speaks WebSocket only: send GET with 'Upgrade: websocket', "
            "'Connection: Upgrade', 'Sec-WebSocket-Version: 13' and a Sec-WebSocket-Key.",
            upgrade_required,
        )
    if request.method != b"GET":
        return HandshakeRejected(400, "a WebSocket handshake must use GET")
    if request.http_version != b"1.1":
        return HandshakeRejected(400, "a WebSocket handshake needs HTTP/1.1")
    if "upgrade" not in (v.lower() for v in _comma_values(request, b"connection")):
        return HandshakeRejected(400, "missing 'Connection: Upgrade'")
    version = _header(request, b"sec-websocket-version")
    if version != WEBSOCKET_VERSION:
        return HandshakeRejected(
            426, f"unsupported Sec-WebSocket-Version {version!r} (need 13)", upgrade_required
        )
    key = _header(request, b"sec-websocket-key") or ""
    try:
        key_valid = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        key_valid = False
    if not key_valid:
        return HandshakeRejected(400, "Sec-WebSocket-Key must be 16 bytes in base64")
    offered = tuple(_comma_values(request, b"sec-websocket-protocol"))
    extensions = tuple(_comma_values(request, b"sec-websocket-extensions"))
    return HandshakeAccepted(
        accept_token=generate_accept_token(key.encode("ascii")).decode("ascii"),
        subprotocol=offered[0] if offered else None,
        offered_subprotocols=offered,
        offered_extensions=extensions,
        deflate=_choose_deflate(extensions) if compression else None,
    )


def _choose_deflate(offers: tuple[str, ...]) -> DeflateParameters | None:
    for offer in offers:
        name, _, params = offer.partition(";")
        if name.strip().lower() == EXTENSION_NAME:
            agreed = accept_offer(params)
            if agreed is not None:
                return agreed
    return None


class ServerDeflate(Extension):
    """permessage-deflate for a wsproto server ``Connection``: inflates
    whole messages within ``limit`` bytes (beyond it: close 1009)."""

    name = EXTENSION_NAME

    def __init__(self, agreed: DeflateParameters, limit: int) -> None:
        self._deflater = Deflater(
            Deflate(), agreed.server_max_window_bits, agreed.server_no_context_takeover
        )
        self._inflater = Inflater(agreed.client_max_window_bits, agreed.client_no_context_takeover)
        self._limit = limit
        self._data_frame = False  # the frame being received carries data
        self._compressed = False  # the message being received is compressed

    def enabled(self) -> bool:
        return True

    def offer(self) -> bool:
        return False  # servers answer offers; they make none

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        if rsv.rsv1 and (opcode.iscontrol() or opcode is Opcode.CONTINUATION):
            return CloseReason.PROTOCOL_ERROR
        self._data_frame = not opcode.iscontrol()
        if opcode in (Opcode.TEXT, Opcode.BINARY):
            self._compressed = rsv.rsv1
        return RsvBits(True, False, False)

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if not (self._data_frame and self._compressed):
            return data
        try:
            self._inflater.feed(data, self._limit)
        except TooBig:
            return CloseReason.MESSAGE_TOO_BIG
        except InflateError:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        return b""  # the message comes out whole, at its last frame

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if not (fin and self._data_frame and self._compressed):
            return None
        self._compressed = False
        try:
            return self._inflater.finish(self._limit)
        except TooBig:
            return CloseReason.MESSAGE_TOO_BIG
        except InflateError:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA

    def frame_outbound(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        data: bytes,
        fin: bool,
    ) -> tuple[RsvBits, bytes]:
        if opcode.iscontrol():
            return rsv, data
        assert fin and opcode is not Opcode.CONTINUATION  # the origin never fragments
        return RsvBits(True, rsv.rsv2, rsv.rsv3), self._deflater.compress(data)


async def accept(http: HTTPConnection, handshake: HandshakeAccepted) -> Connection:
    """Send the 101 and return the wsproto connection with any pipelined bytes."""
    headers = [
        (b"Upgrade", b"websocket"),
        (b"Connection", b"Upgrade"),
        (b"Sec-WebSocket-Accept", handshake.accept_token.encode("ascii")),
    ]
    if handshake.subprotocol is not None:
        headers.append((b"Sec-WebSocket-Protocol", handshake.subprotocol.encode("latin-1")))
    extensions: list[Extension] = []
    if handshake.deflate is not None:
        headers.append((b"Sec-WebSocket-Extensions", handshake.deflate.header_value().encode()))
        extensions.append(ServerDeflate(handshake.deflate, http.config.max_message_size))
    await http.send(
        h11.InformationalResponse(status_code=101, headers=headers, reason=b"Switching Protocols")
    )
    trailing, _closed = http.h11.trailing_data
    return Connection(ConnectionType.SERVER, extensions=extensions, trailing_data=trailing)


def _truncate_reason(reason: str) -> str:
    encoded = reason.encode("utf-8")[:MAX_CLOSE_REASON_BYTES]
    return encoded.decode("utf-8", errors="ignore")


class EchoSession:
    """Echo every message back with its type; echo the close code and reason.

    One task, strictly alternating: while an echo is being written nothing is
    read, so a client that sends but never reads is held back by TCP instead
    of growing a buffer here.
    """

    def __init__(self, http: HTTPConnection, ws: Connection) -> None:
        self.http = http
        self.ws = ws
        self.config = http.config
        self._text: list[str] = []
        self._binary: list[bytes] = []
        self._size = 0

    async def send(self, event: Event) -> None:
        await self.http.send_raw(self.ws.send(event))

    async def close(self, code: int, reason: str) -> None:
        """Start the closing handshake from our side (if still possible)."""
        if self.ws.state is ConnectionState.OPEN:
            await self.send(CloseConnection(code=code, reason=_truncate_reason(reason)))

    async def run(self, first_message: str | None = None) -> None:
        """Serve until the connection closes; never raises for client misbehaviour."""
        try:
            if first_message is not None:
                await self.send(TextMessage(data=first_message))
            await self._loop()
        except ClientGone:
            pass

    async def _loop(self) -> None:
        while self.ws.state is not ConnectionState.CLOSED:
            waiting_for_close = self.ws.state is ConnectionState.LOCAL_CLOSING
            limit = self.config.close_timeout if waiting_for_close else (
                self.config.websocket_idle_timeout
            )
            data = b""
            with trio.move_on_after(limit) as idle:
                data = await self.http.receive_raw()
            if idle.cancelled_caught:
                if not waiting_for_close:
                    await self.close(CloseReason.GOING_AWAY, "idle timeout")
                    continue
                return  # the peer never answered our Close; give up
            if not data:
                return  # EOF (with or without a closing handshake)
            self.ws.receive_data(data)
            for event in self.ws.events():
                await self._handle(event)
                if self._closed():
                    # RFC 6455 7.1.1: the server closes the TCP connection first.
                    return

    def _closed(self) -> bool:
        return self.ws.state is ConnectionState.CLOSED

    async def _handle(self, event: Event) -> None:
        if isinstance(event, Message):
            if self.ws.state is not ConnectionState.OPEN:
                return  # data after we started closing is discarded (RFC 6455 5.5.1)
            self._size += len(event.data)
            if self._size > self.config.max_message_size:
                self._text.clear()
                self._binary.clear()
                await self.close(
                    CloseReason.MESSAGE_TOO_BIG,
                    f"message exceeds {self.config.max_message_size} bytes",
                )
                return
            if isinstance(event, TextMessage):
                self._text.append(event.data)
            elif isinstance(event, BytesMessage):
                self._binary.append(bytes(event.data))
            if event.message_finished:
                await self._echo(isinstance(event, TextMessage))
        elif isinstance(event, Ping):
            if self.ws.state is ConnectionState.OPEN:
                await self.send(event.response())
        elif isinstance(event, CloseConnection):
            if self.ws.state is ConnectionState.REMOTE_CLOSING:
                await self.send(event.response())  # same code and reason back
            else:
                # wsproto reports the peer's protocol violations this way
                # while the connection is still open: close with its code.
                await self.close(event.code, event.reason or "")

    async def _echo(self, is_text: bool) -> None:
        text, binary = self._text, self._binary
        self._text, self._binary, self._size = [], [], 0
        if is_text:
            await self.send(TextMessage(data="".join(text)))
        else:
            await self.send(BytesMessage(data=b"".join(binary)))
