"""The HTTP CONNECT negotiation, Sans-IO: build the request, parse the reply.

Nothing here touches a socket or a clock. :func:`build_connect_request` turns a
target and headers into bytes; :class:`ConnectReplyParser` is fed the bytes the
proxy sends, in whatever pieces they arrive, and hands back one
:class:`ProxyReply` when the reply is complete. The trio layer only moves bytes
and applies timeouts.

Parsing rules (RFC 9110 / RFC 9112, client side):

* A 2xx reply ends at the blank line after its headers. ``Connection``,
  ``Content-Length`` and ``Transfer-Encoding`` on it are ignored (RFC 9110
  9.3.6): every byte after the blank line belongs to the tunnel and is kept,
  unparsed, in :attr:`ConnectReplyParser.leftover`.
* A non-2xx reply's body is framed by ``Transfer-Encoding: chunked`` or
  ``Content-Length``, or else runs until the proxy closes the connection. At
  most ``MAX_KEPT_BODY`` bytes of it are kept; the rest is discarded as it
  arrives, so memory stays bounded whatever the proxy sends.
* 1xx interim replies are skipped; ``101 Switching Protocols`` is an error
  (a CONNECT cannot be upgraded).
* Tolerated, because real proxies send them and the RFCs allow a recipient to
  accept them: bare LF line endings (RFC 9112 2.2) and obs-fold continuation
  lines, which are unfolded to one space (RFC 9112 5.2 requires a user agent to
  do so). A missing reason phrase (``HTTP/1.1 200``) is accepted too.
* Rejected with :class:`~tunnelws.ProxyProtocolError`: anything that does not
  start with ``HTTP/1.0`` or ``HTTP/1.1``, header names that are not tokens,
  whitespace before the colon, control characters in values, header blocks
  (all interim and final header lines together) larger than
  ``max_header_bytes``, malformed ``Content-Length`` or chunk sizes.

Every byte is looked at a bounded number of times, so a reply dribbled one byte
per read costs no more than the same reply in one piece.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ._errors import MAX_KEPT_BODY, ProxyProtocolError
from ._grammar import TOKEN_BYTES, is_token, list_tokens, split_list, token_prefix
from ._target import format_authority

__all__ = [
    "DEFAULT_MAX_HEADER_BYTES",
    "ConnectReplyParser",
    "ProxyReply",
    "build_connect_request",
]

DEFAULT_MAX_HEADER_BYTES = 65536

_REQUEST_VALUE_FORBIDDEN = re.compile(r"[\r\n\x00]")
# A host in wire form: IDNA A-label name (underscores tolerated, as in
# _target.normalize_host) or an IP literal without brackets or zone.
_WIRE_HOST = re.compile(r"[A-Za-z0-9._\-:]+")

_STATUS_LINE = re.compile(rb"HTTP/(1\.[01]) ([1-5][0-9][0-9])(?: (.*))?", re.DOTALL)
# Controls other than HTAB are not allowed in reason phrases or field values.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_DIGITS = re.compile(r"[0-9]+")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")

# How many bytes of a non-HTTP reply to show in the error message.
_GARBAGE_PREFIX = 10
# How much of a bad line to show in an error message.
_SHOWN_LINE = 80
# A chunk-size line with extensions longer than this is not a real proxy.
_MAX_CHUNK_SIZE_LINE = 4096
_HTTP_PREFIX = b"HTTP/"


def build_connect_request(
    host: str, port: int, *, headers: Sequence[tuple[str, str]] = ()
) -> bytes:
    """Return the bytes of ``CONNECT host:port HTTP/1.1`` with its headers.

    ``host`` is already in wire form (see :func:`tunnelws._target.normalize_host`);
    IPv6 literals are bracketed here. ``Host`` is always written first, then
    ``headers`` in the order given. Header names must be RFC 9110 tokens and
    values must not contain CR, LF or NUL, else :class:`ValueError`; the message
    never repeats a header value, since one may be a ``Proxy-Authorization``.
    """
    if not _WIRE_HOST.fullmatch(host):
        raise ValueError(f"invalid CONNECT host {host!r}: expected an IDNA name or an IP address")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid CONNECT host {host!r}: not an IPv6 address") from None
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"invalid CONNECT port {port!r}: expected 1..65535")
    authority = format_authority(host, port)
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    for name, value in headers:
        _check_request_header(name, value)
        lines.append(f"{name}: {value}")
    text = "\r\n".join(lines) + "\r\n\r\n"
    return text.encode("latin-1")


def _check_request_header(name: str, value: str) -> None:
    if not is_token(name):
        # Show only the valid token prefix: a caller who passed a whole
        # "Proxy-Authorization: Basic ..." line as the name must not see it echoed.
        valid_prefix = token_prefix(name)
        raise ValueError(
            f"invalid header name starting {valid_prefix!r}: "
            "header names must be RFC 9110 tokens (no spaces, colons or control characters)"
        )
    if name.lower() == "host":
        raise ValueError("the Host header of a CONNECT is set by tunnelws; do not pass one")
    if _REQUEST_VALUE_FORBIDDEN.search(value):
        raise ValueError(f"the value of header {name!r} contains CR, LF or NUL")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(
            f"the value of header {name!r} has characters outside ISO-8859-1; "
            "encode it (for example with RFC 8187 or base64) first"
        ) from None


@dataclass(frozen=True)
class ProxyReply:
    """The proxy's final answer to a CONNECT.

    ``headers`` are as received, in order (names as sent, values with
    surrounding whitespace removed and obs-folds unfolded). ``body`` holds the
    first bytes (at most ``MAX_KEPT_BODY``) of a non-2xx body and is ``b""`` for
    a 2xx. ``reusable`` says another CONNECT may be sent on the same
    connection: a non-2xx reply whose body was delimited (Content-Length or
    chunked, not both), without ``Connection: close`` (``Proxy-Connection`` is
    honoured too), and for HTTP/1.0 only with ``keep-alive``.
    """

    http_version: str
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    reusable: bool

    @property
    def ok(self) -> bool:
        """True for a 2xx: the tunnel is open."""
        return 200 <= self.status < 300

    def get_all(self, name: str) -> list[str]:
        """Values of every header called ``name`` (case-insensitive), in order."""
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]


class _State(enum.Enum):
    STATUS_LINE = enum.auto()
    HEADERS = enum.auto()
    BODY_LENGTH = enum.auto()
    CHUNK_SIZE = enum.auto()
    CHUNK_DATA = enum.auto()
    CHUNK_DATA_END = enum.auto()
    TRAILERS = enum.auto()
    BODY_UNTIL_EOF = enum.auto()
    DONE = enum.auto()
    FAILED = enum.auto()


class ConnectReplyParser:
    """Incremental parser for one CONNECT reply (see the module docstring).

    Feed it every byte the proxy sends with :meth:`feed`, then :meth:`feed_eof`
    if the connection closes first. After the reply is complete, bytes passed
    to :meth:`feed` are appended to :attr:`leftover` untouched. After an error,
    the parser stays failed and raises the same error again.
    """

    def __init__(self, *, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> None:
        if max_header_bytes < 1:
            raise ValueError("max_header_bytes must be positive")
        self._max_header_bytes = max_header_bytes
        self._state = _State.STATUS_LINE
        self._buf = bytearray()
        self._pos = 0  # start of the unconsumed part of _buf
        self._scan = 0  # no LF in _buf[_pos:_scan]: resume the search here
        self._received = 0
        self._header_bytes = 0  # status and header lines consumed, interim replies included
        self._trailer_bytes = 0
        self._version = ""
        self._status = 0
        self._reason = ""
        self._headers: list[tuple[str, str]] = []
        self._remaining = 0  # of a Content-Length body or of the current chunk
        self._delimited = False
        self._conflicting_framing = False
        self._body = bytearray()
        self._reply: ProxyReply | None = None
        self._leftover = bytearray()
        self._error: ProxyProtocolError | None = None

    @property
    def leftover(self) -> bytes:
        """Bytes received after the end of the reply (for a 2xx: tunnel data)."""
        return bytes(self._leftover)

    @property
    def reply(self) -> ProxyReply | None:
        """The complete reply, once there is one."""
        return self._reply

    def feed(self, data: bytes) -> ProxyReply | None:
        """Consume ``data``; return the reply when this completes it, else None.

        Raises :class:`~tunnelws.ProxyProtocolError` when the bytes cannot be
        a valid reply.
        """
        if self._error is not None:
            raise self._error
        if self._reply is not None:
            self._leftover += data
            return None
        self._received += len(data)
        if self._state is _State.BODY_UNTIL_EOF:
            # The common case of an unframed error page: never buffer it.
            self._keep_body(data[:MAX_KEPT_BODY])
            return None
        self._buf += data
        try:
            reply = self._advance()
        except ProxyProtocolError as exc:
            self._fail(exc)
            raise
        if self._pos:
            del self._buf[: self._pos]
            self._scan -= self._pos
            self._pos = 0
        return reply

    def feed_eof(self) -> ProxyReply | None:
        """The proxy closed the connection.

        Returns the reply when the close completes it (a body read until close)
        or when it was already complete; otherwise raises
        :class:`~tunnelws.ProxyProtocolError`.
        """
        if self._error is not None:
            raise self._error
        if self._reply is not None:
            return self._reply
        if self._state is _State.BODY_UNTIL_EOF:
            return self._finish()
        if self._received == 0:
            message = "proxy closed the connection without answering the CONNECT"
        else:
            message = (
                "proxy closed the connection in the middle of its reply "
                f"({self._received} bytes received)"
            )
        error = ProxyProtocolError(message)
        self._fail(error)
        raise error

    # -- the state machine ---------------------------------------------------

    def _advance(self) -> ProxyReply | None:
        while True:
            state = self._state
            if state is _State.STATUS_LINE:
                self._check_looks_like_http()
                line = self._take_header_line()
                if line is None:
                    return None
                self._parse_status_line(line)
                self._state = _State.HEADERS
            elif state is _State.HEADERS:
                line = self._take_header_line()
                if line is None:
                    return None
                if line:
                    self._parse_header_line(line)
                else:
                    reply = self._end_of_header_block()
                    if reply is not None:
                        return reply
            elif state is _State.BODY_LENGTH:
                self._consume_body_bytes()
                if self._remaining:
                    return None
                return self._finish()
            elif state is _State.CHUNK_SIZE:
                line = self._take_line(
                    _MAX_CHUNK_SIZE_LINE, "proxy reply has an over-long chunk size line"
                )
                if line is None:
                    return None
                self._parse_chunk_size(line)
            elif state is _State.CHUNK_DATA:
                self._consume_body_bytes()
                if self._remaining:
                    return None
                self._state = _State.CHUNK_DATA_END
            elif state is _State.CHUNK_DATA_END:
                if not self._take_line_end():
                    return None
                self._state = _State.CHUNK_SIZE
            elif state is _State.TRAILERS:
                start = self._pos
                budget = self._max_header_bytes - self._trailer_bytes
                overflow = f"proxy reply trailer section exceeds {self._max_header_bytes} bytes"
                line = self._take_line(budget, overflow)
                if line is None:
                    return None
                self._trailer_bytes += self._pos - start
                if not line:
                    return self._finish()
                # Trailer fields carry nothing a CONNECT client needs.
            elif state is _State.BODY_UNTIL_EOF:
                # Later bytes skip the buffer entirely (see feed()).
                self._keep_body(self._buf[self._pos : self._pos + MAX_KEPT_BODY])
                self._pos = self._scan = len(self._buf)
                return None
            else:  # DONE and FAILED never reach here: feed() returns early.
                raise AssertionError(state)

    def _check_looks_like_http(self) -> None:
        # Fail as soon as the first bytes cannot begin "HTTP/": a proxy that
        # speaks another protocol may never send a newline.
        start = bytes(self._buf[self._pos : self._pos + len(_HTTP_PREFIX)])
        if not _HTTP_PREFIX.startswith(start):
            prefix = bytes(self._buf[self._pos : self._pos + _GARBAGE_PREFIX])
            more = "..." if len(self._buf) - self._pos > _GARBAGE_PREFIX else ""
            raise ProxyProtocolError(f"proxy reply is not HTTP: {prefix!r}{more}")

    def _take_header_line(self) -> bytes | None:
        budget = self._max_header_bytes - self._header_bytes
        start = self._pos
        line = self._take_line(
            budget, f"proxy reply header block exceeds {self._max_header_bytes} bytes"
        )
        if line is not None:
            self._header_bytes += self._pos - start
        return line

    def _take_line(self, budget: int, overflow: str) -> bytes | None:
        """Return the next line without its CRLF/LF, or None if incomplete.

        A line of ``budget`` bytes or more (terminator included) is an error:
        the search never looks further than that, so a huge chunk costs no more
        than a small one.
        """
        end = self._pos + budget
        newline = self._buf.find(b"\n", self._scan, end)
        if newline < 0:
            if len(self._buf) >= end:
                raise ProxyProtocolError(overflow)
            self._scan = len(self._buf)
            return None
        line = bytes(self._buf[self._pos : newline])
        self._pos = self._scan = newline + 1
        return line[:-1] if line.endswith(b"\r") else line

    def _take_line_end(self) -> bool:
        pending = bytes(self._buf[self._pos : self._pos + 2])
        if pending[:1] == b"\n":
            size = 1
        elif pending == b"\r\n":
            size = 2
        elif pending in (b"", b"\r"):
            return False  # the terminator has not fully arrived yet
        else:
            raise ProxyProtocolError(
                "invalid chunked body in proxy reply: chunk data not followed by CRLF"
            )
        self._pos = self._scan = self._pos + size
        return True

    def _parse_status_line(self, line: bytes) -> None:
        match = _STATUS_LINE.fullmatch(line)
        reason = match.group(3) if match else None
        if match is None or (reason is not None and _CONTROL.search(reason)):
            raise ProxyProtocolError(f"invalid status line in proxy reply: {_shown(line)}")
        self._version = match.group(1).decode("ascii")
        self._status = int(match.group(2))
        self._reason = (reason or b"").decode("latin-1").strip(" \t")
        self._headers = []

    def _parse_header_line(self, line: bytes) -> None:
        if line[:1] in (b" ", b"\t"):
            if not self._headers or _CONTROL.search(line):
                raise ProxyProtocolError(f"invalid header line in proxy reply: {_shown(line)}")
            previous_name, previous_value = self._headers[-1]
            folded = line.strip(b" \t").decode("latin-1")
            joined = f"{previous_value} {folded}" if previous_value else folded
            self._headers[-1] = (previous_name, joined)
            return
        name, colon, value = line.partition(b":")
        if not colon or not TOKEN_BYTES.fullmatch(name) or _CONTROL.search(value):
            raise ProxyProtocolError(f"invalid header line in proxy reply: {_shown(line)}")
        self._headers.append((name.decode("ascii"), value.strip(b" \t").decode("latin-1")))

    def _end_of_header_block(self) -> ProxyReply | None:
        status = self._status
        if status == 101:
            raise ProxyProtocolError("proxy answered the CONNECT with 101 Switching Protocols")
        if status < 200:
            # Interim reply: the real one follows. Its lines stay counted
            # against the header limit, so endless 1xx replies still fail.
            self._state = _State.STATUS_LINE
            return None
        if 200 <= status < 300:
            return self._finish()
        self._choose_body_framing()
        if self._state is _State.BODY_LENGTH and self._remaining == 0:
            return self._finish()
        return None

    def _choose_body_framing(self) -> None:
        codings = [
            coding.lower()
            for value in self._get_all("transfer-encoding")
            for coding in split_list(value)
        ]
        lengths = self._get_all("content-length")
        if self._status == 304:
            self._state, self._remaining, self._delimited = _State.BODY_LENGTH, 0, True
        elif codings:
            # Both headers together hint at response smuggling: read the body
            # by Transfer-Encoding (RFC 9112 6.3) but never reuse the connection.
            self._conflicting_framing = bool(lengths) or self._version == "1.0"
            if codings[-1] == "chunked":
                self._state, self._delimited = _State.CHUNK_SIZE, True
            else:
                self._state = _State.BODY_UNTIL_EOF
        elif lengths:
            self._state, self._remaining = _State.BODY_LENGTH, self._parse_content_length(lengths)
            self._delimited = True
        else:
            self._state = _State.BODY_UNTIL_EOF

    def _parse_content_length(self, values: list[str]) -> int:
        # "42, 42" (a list of equal values) is allowed by RFC 9110 8.6.
        items = {item for value in values for item in split_list(value)}
        if len(items) != 1 or not _DIGITS.fullmatch(next(iter(items))):
            shown = ", ".join(values)
            if len(shown) > _SHOWN_LINE:
                shown = shown[:_SHOWN_LINE] + "..."
            raise ProxyProtocolError(f"bad Content-Length in proxy reply: {shown!r}")
        return int(items.pop().lstrip("0") or "0")

    def _parse_chunk_size(self, line: bytes) -> None:
        size_text = line.split(b";", 1)[0].strip(b" \t")
        if not _CHUNK_SIZE.fullmatch(size_text):
            raise ProxyProtocolError(f"bad chunk size in proxy reply: {_shown(line)}")
        size = int(size_text, 16)
        if size:
            self._state, self._remaining = _State.CHUNK_DATA, size
        else:
            self._state = _State.TRAILERS

    def _consume_body_bytes(self) -> None:
        available = len(self._buf) - self._pos
        taken = min(available, self._remaining)
        if taken:
            self._keep_body(self._buf[self._pos : self._pos + min(taken, MAX_KEPT_BODY)])
            self._pos += taken
            self._scan = self._pos
            self._remaining -= taken

    def _keep_body(self, data: bytes | bytearray) -> None:
        room = MAX_KEPT_BODY - len(self._body)
        if room > 0:
            self._body += data[:room]

    def _finish(self) -> ProxyReply:
        ok = 200 <= self._status < 300
        tokens = list_tokens(self._get_all("connection") + self._get_all("proxy-connection"))
        reusable = (
            not ok
            and self._delimited
            and not self._conflicting_framing
            and "close" not in tokens
            and (self._version == "1.1" or "keep-alive" in tokens)
        )
        reply = ProxyReply(
            http_version=self._version,
            status=self._status,
            reason=self._reason,
            headers=tuple(self._headers),
            body=b"" if ok else bytes(self._body),
            reusable=reusable,
        )
        self._reply = reply
        self._state = _State.DONE
        self._leftover += self._buf[self._pos :]
        self._buf = bytearray()
        self._pos = self._scan = 0
        return reply

    def _fail(self, error: ProxyProtocolError) -> None:
        self._error = error
        self._state = _State.FAILED
        self._buf = bytearray()
        self._pos = self._scan = 0

    def _get_all(self, lowercase_name: str) -> list[str]:
        return [value for name, value in self._headers if name.lower() == lowercase_name]


def _shown(line: bytes) -> str:
    """A bad line for an error message: escaped and truncated."""
    if len(line) > _SHOWN_LINE:
        return f"{line[:_SHOWN_LINE]!r}..."
    return repr(line)
