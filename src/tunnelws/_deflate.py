"""permessage-deflate (RFC 7692): negotiation and the per-message codec, Sans-IO.

The client offers ``permessage-deflate; client_max_window_bits`` (as browsers
and python-websockets do) and accepts what the server answers within the
RFC's rules. Both codecs are created on first use, so an idle connection
holds no zlib state. Decompression is bounded: a message that inflates
beyond the limit stops zlib at the limit (a compression bomb never gets
memory), and the caller closes with 1009.

The origin test server uses the same codec with the roles swapped.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from ._grammar import GrammarError, parse_parameters

__all__ = [
    "EXTENSION_NAME",
    "Deflate",
    "DeflateParameters",
    "Deflater",
    "InflateError",
    "Inflater",
    "NegotiationError",
    "TooBig",
    "accept_offer",
    "client_offer",
    "parse_response",
]

EXTENSION_NAME = "permessage-deflate"
# Every message is compressed and then sync-flushed; the flush ends with an
# empty stored block, which the sender strips and the receiver puts back.
_TAIL = b"\x00\x00\xff\xff"


@dataclass(frozen=True)
class Deflate:
    """permessage-deflate settings for ``open_websocket(compression=...)``.

    ``level`` is zlib's (1 fastest, 9 smallest): 3 compresses 64 KiB of JSON
    in 0.6 of the time of zlib's default 6, for 14 % more bytes.
    ``memory_level`` (1-9) sizes the compressor's hash table and buffers; 5
    takes 16 KiB where zlib's default 8 takes 128.
    ``max_window_bits`` (9-15) caps the compressor's window (the server can
    lower it further); decompression always uses the window the server
    declares. All three affect only what this side sends.
    """

    level: int = 3
    memory_level: int = 5
    max_window_bits: int = 15

    def __post_init__(self) -> None:
        if not 0 <= self.level <= 9:
            raise ValueError("Deflate level must be between 0 and 9")
        if not 1 <= self.memory_level <= 9:
            raise ValueError("Deflate memory_level must be between 1 and 9")
        if not 9 <= self.max_window_bits <= 15:
            # zlib cannot compress with an 8-bit window.
            raise ValueError("Deflate max_window_bits must be between 9 and 15")


@dataclass(frozen=True)
class DeflateParameters:
    """What a handshake agreed on (RFC 7692 section 7.1)."""

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int = 15
    client_max_window_bits: int = 15

    def header_value(self) -> str:
        """The ``Sec-WebSocket-Extensions`` value a server answers with."""
        parts = [EXTENSION_NAME]
        if self.server_no_context_takeover:
            parts.append("server_no_context_takeover")
        if self.client_no_context_takeover:
            parts.append("client_no_context_takeover")
        if self.server_max_window_bits != 15:
            parts.append(f"server_max_window_bits={self.server_max_window_bits}")
        if self.client_max_window_bits != 15:
            parts.append(f"client_max_window_bits={self.client_max_window_bits}")
        return "; ".join(parts)


class NegotiationError(ValueError):
    """An extension offer or answer breaks RFC 7692's rules."""


def client_offer() -> str:
    """The parameters of the client's offer (after the extension name)."""
    return "client_max_window_bits"


def _parameters(text: str) -> dict[str, str | None]:
    """``a; b=1; c="2"`` -> {"a": None, "b": "1", "c": "2"}; duplicates are errors."""
    try:
        items = parse_parameters(text)
    except GrammarError as exc:
        raise NegotiationError(f"malformed parameters: {exc}") from None
    params: dict[str, str | None] = {}
    for name, value in items:
        if name in params:
            raise NegotiationError(f"duplicate parameter {name}")
        params[name] = value
    return params


def _window_bits(name: str, value: str | None, lowest: int = 8) -> int:
    if value is None or not value.isdigit() or not lowest <= int(value) <= 15:
        raise NegotiationError(f"{name} must be a number from {lowest} to 15, not {value!r}")
    return int(value)


def parse_response(params_text: str) -> DeflateParameters:
    """Check the server's answer to :func:`client_offer` (the text after the
    extension name) and return the agreed parameters."""
    agreed: dict[str, object] = {}
    for name, value in _parameters(params_text).items():
        if name in ("server_no_context_takeover", "client_no_context_takeover"):
            if value is not None:
                raise NegotiationError(f"{name} takes no value")
            agreed[name] = True
        elif name == "server_max_window_bits":
            agreed[name] = _window_bits(name, value)
        elif name == "client_max_window_bits":
            # zlib cannot compress with an 8-bit window: such an answer
            # cannot be honoured, and RFC 7692 says to fail then.
            agreed[name] = _window_bits(name, value, lowest=9)
        else:
            raise NegotiationError(f"unknown parameter {name}")
    return DeflateParameters(**agreed)  # type: ignore[arg-type]


def accept_offer(params_text: str, *, max_window_bits: int = 15) -> DeflateParameters | None:
    """A server's choice for one client offer, or None when the offer is
    unusable (the server then tries the next offer or declines)."""
    try:
        params = _parameters(params_text)
        server_bits = 15
        client_bits = 15
        for name, value in params.items():
            if name in ("server_no_context_takeover", "client_no_context_takeover"):
                if value is not None:
                    return None
            elif name == "server_max_window_bits":
                server_bits = _window_bits(name, value, lowest=9)
            elif name == "client_max_window_bits":
                if value is not None:
                    client_bits = _window_bits(name, value)
            else:
                return None
    except NegotiationError:
        return None
    server_bits = min(server_bits, max_window_bits)
    # The client's window may be limited only when it said it can be.
    if "client_max_window_bits" in params:
        client_bits = min(client_bits, max_window_bits)
    return DeflateParameters(
        server_no_context_takeover="server_no_context_takeover" in params,
        client_no_context_takeover="client_no_context_takeover" in params,
        server_max_window_bits=server_bits,
        client_max_window_bits=client_bits,
    )


class Deflater:
    """Compresses whole messages for one direction of one connection."""

    def __init__(self, settings: Deflate, window_bits: int, no_context_takeover: bool) -> None:
        self._level = settings.level
        self._memory_level = settings.memory_level
        self._window_bits = max(9, min(window_bits, settings.max_window_bits))
        # A full flush forgets the history, which is exactly what
        # no_context_takeover asks for, without reallocating zlib's state.
        self._flush_mode = zlib.Z_FULL_FLUSH if no_context_takeover else zlib.Z_SYNC_FLUSH
        self._zlib: zlib._Compress | None = None

    def compress(self, message: bytes) -> bytes:
        z = self._zlib
        if z is None:
            z = self._zlib = zlib.compressobj(
                self._level, zlib.DEFLATED, -self._window_bits, self._memory_level
            )
        data = z.compress(message) + z.flush(self._flush_mode)
        return data[:-4]  # RFC 7692 7.2.1: remove the trailing 00 00 ff ff


class TooBig(Exception):
    """A message inflates beyond the limit."""


class InflateError(Exception):
    """The compressed data is not valid DEFLATE."""


class Inflater:
    """Decompresses messages for one direction, within a size limit.

    Feed a message's compressed payload in pieces with :meth:`feed`; the
    last piece goes to :meth:`finish`, which returns the message. Both raise
    :class:`TooBig` as soon as the message would exceed ``limit`` bytes and
    :class:`InflateError` for data that is not DEFLATE.
    """

    def __init__(self, window_bits: int, no_context_takeover: bool) -> None:
        self._window_bits = window_bits
        self._no_context_takeover = no_context_takeover
        self._zlib: zlib._Decompress | None = None
        self._pieces: list[bytes] = []
        self._size = 0
        # After a block with BFINAL set (RFC 7692 7.2.3.4) zlib's stream is
        # over; the next message continues in a new one primed with the
        # history so far.
        self._history = b""

    def feed(self, data: bytes | memoryview, limit: int) -> None:
        z = self._zlib
        if z is None:
            if self._history:
                z = zlib.decompressobj(-self._window_bits, zdict=self._history)
            else:
                z = zlib.decompressobj(-self._window_bits)
            self._zlib = z
        if z.eof:
            return  # bytes after the final block carry nothing
        try:
            out = z.decompress(data, limit - self._size + 1)
        except zlib.error as exc:
            raise InflateError(f"invalid compressed data ({exc})") from None
        self._size += len(out)
        if self._size > limit or z.unconsumed_tail:
            self._reset()
            raise TooBig
        if out:
            self._pieces.append(out)

    def finish(self, limit: int, last: bytes = b"") -> bytes:
        """End the message with its final payload piece ``last``, fed along
        with the flush marker the sender removed; return the message."""
        # Appending copies, which beats a second zlib call for small pieces.
        if len(last) < 2048:
            self.feed(last + _TAIL, limit)
        else:
            self.feed(last, limit)
            self.feed(_TAIL, limit)
        pieces = self._pieces
        message = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        z = self._zlib
        assert z is not None
        if self._no_context_takeover:
            self._zlib = None
        elif z.eof:
            self._history = (self._history + message)[-(1 << self._window_bits) :]
            self._zlib = None
        self._pieces = []
        self._size = 0
        return message

    def _reset(self) -> None:
        self._pieces = []
        self._size = 0
        self._zlib = None
