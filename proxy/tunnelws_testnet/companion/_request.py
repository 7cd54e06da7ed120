"""Parsing an HTTP/1.x request head as a proxy receives it.

Pure: bytes in, a :class:`RequestHead` (or a :class:`BadRequest`) out, no I/O.
The parser is strict about framing (request line, header syntax, size) because
a test proxy that accepts anything would hide client bugs, and it reports what
was wrong with the status a real proxy would send (400, 431).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_MAX_HEAD_BYTES",
    "BadRequest",
    "RequestHead",
    "RequestHeadParser",
    "normalize_host",
    "parse_absolute_url",
    "parse_authority",
]

DEFAULT_MAX_HEAD_BYTES = 64 * 1024

_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_REQUEST_LINE = re.compile(rb"^(?P<method>[^ ]+) (?P<target>[^ ]+) HTTP/(?P<version>\d\.\d)$")
_HEAD_END = re.compile(rb"\r?\n\r?\n")


class BadRequest(Exception):
    """The client sent something that is not an acceptable request head.

    ``status`` is what the proxy answers with before closing (400 or 431).
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class RequestHead:
    """One parsed request line and its header fields (names kept as sent)."""

    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...] = field(default=())

    def get(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        return next((v for k, v in self.headers if k.lower() == wanted), None)

    def get_all(self, name: str) -> list[str]:
        wanted = name.lower()
        return [v for k, v in self.headers if k.lower() == wanted]

    def connection_tokens(self) -> set[str]:
        """Lower-cased tokens of every ``Connection`` header."""
        return {
            token.strip().lower()
            for value in self.get_all("connection")
            for token in value.split(",")
            if token.strip()
        }

    @property
    def has_body(self) -> bool:
        length = self.get("content-length")
        return self.get("transfer-encoding") is not None or (
            length is not None and length.strip() != "0"
        )


class RequestHeadParser:
    """Accumulates bytes until one complete request head is available.

    ``feed(data)`` returns None while the head is incomplete, then the
    :class:`RequestHead`; bytes after the head are in :attr:`leftover` (a client
    may pipeline tunnel bytes right behind its CONNECT). Raises
    :class:`BadRequest` for malformed or oversized heads.
    """

    def __init__(self, max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES) -> None:
        self.max_head_bytes = max_head_bytes
        self._buffer = bytearray()
        self.leftover = b""

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> RequestHead | None:
        self._buffer += data
        # Leading empty lines before a request line are tolerated (RFC 9112 2.2).
        while self._buffer[:2] == b"\r\n" or self._buffer[:1] == b"\n":
            del self._buffer[: 2 if self._buffer[:1] == b"\r" else 1]
        match = _HEAD_END.search(self._buffer)
        if match is None:
            if len(self._buffer) > self.max_head_bytes:
                raise BadRequest(431, "request header block too large")
            self._reject_early_garbage()
            return None
        if match.end() > self.max_head_bytes:
            raise BadRequest(431, "request header block too large")
        head = bytes(self._buffer[: match.start()])
        self.leftover = bytes(self._buffer[match.end() :])
        self._buffer.clear()
        return _parse_head(head)

    def _reject_early_garbage(self) -> None:
        # Without this, a peer sending binary junk and no blank line would only
        # be rejected at the size limit or the head timeout.
        first_line_end = self._buffer.find(b"\n")
        if first_line_end != -1:
            _parse_request_line(bytes(self._buffer[:first_line_end]).rstrip(b"\r"))
        elif self._buffer and not _TOKEN.match(bytes(self._buffer[:1])):
            raise BadRequest(400, "request does not start with a method token")


def _parse_request_line(line: bytes) -> tuple[str, str, str]:
    match = _REQUEST_LINE.match(line)
    if match is None or not _TOKEN.match(match["method"]):
        raise BadRequest(400, "malformed request line")
    try:
        target = match["target"].decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest(400, "non-ASCII request target") from None
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in target):
        raise BadRequest(400, "control character in request target")
    return match["method"].decode("ascii"), target, match["version"].decode("ascii")


def _parse_head(head: bytes) -> RequestHead:
    lines = re.split(rb"\r?\n", head)
    method, target, version = _parse_request_line(lines[0])
    if version not in ("1.0", "1.1"):
        raise BadRequest(400, f"unsupported HTTP version {version}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            raise BadRequest(400, "obsolete header line folding")
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.match(name):
            raise BadRequest(400, "malformed header field")
        if any((b < 0x20 and b != 0x09) or b == 0x7F for b in value):
            raise BadRequest(400, "control character in header value")
        headers.append((name.decode("ascii"), value.strip(b" \t").decode("latin-1")))
    return RequestHead(method, target, version, tuple(headers))


def normalize_host(host: str) -> str:
    """Lower-cased name without trailing dot, or a canonical bare IP literal."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        return bare.rstrip(".").lower()


def parse_authority(authority: str, default_port: int | None = None) -> tuple[str, int]:
    """``host:port`` (IPv6 bracketed) into ``(host, port)``.

    The port is mandatory unless ``default_port`` is given (CONNECT requires
    one, RFC 9110 9.3.6). Raises :class:`BadRequest`.
    """
    if authority.startswith("["):
        close = authority.find("]")
        if close == -1:
            raise BadRequest(400, "unterminated IPv6 literal")
        host, rest = authority[1:close], authority[close + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise BadRequest(400, "invalid IPv6 literal") from None
        if rest and not rest.startswith(":"):
            raise BadRequest(400, "junk after IPv6 literal")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text_ = authority.rpartition(":")
        if not colon:
            host, port_text = authority, None
        else:
            port_text = port_text_
        if ":" in host:
            raise BadRequest(400, "IPv6 literal must be bracketed")
    if port_text is None:
        if default_port is None:
            raise BadRequest(400, "authority without a port")
        port = default_port
    else:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise BadRequest(400, f"invalid port {port_text!r}")
        port = int(port_text)
    if not host or any(c in host for c in "/?#@ "):
        raise BadRequest(400, "invalid host in authority")
    return normalize_host(host), port


def parse_absolute_url(url: str) -> tuple[str, int, str]:
    """``http://host[:port]/path?q`` into ``(host, port, origin-form path)``."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "http" or not parts.netloc:
        raise BadRequest(400, f"unsupported absolute URL scheme {parts.scheme!r}")
    if "@" in parts.netloc:
        raise BadRequest(400, "userinfo in request URL")
    host, port = parse_authority(parts.netloc, default_port=80)
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return host, port, path
