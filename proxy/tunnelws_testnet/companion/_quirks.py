"""How the proxy words its replies, including the odd ways real proxies do.

Pure: builds reply bytes. The quirks are the catalogue's group D: each one is a
way a deployed proxy answers CONNECT that a correct client must survive (or
reject cleanly). Writing them (dribbling, stalling) is the server's job.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ._policy import error_page, reason_phrase

__all__ = ["GARBAGE_REPLY", "ReplyQuirks", "build_response", "connect_success"]

# Bytes no HTTP client can take for a status line.
GARBAGE_REPLY = b"\x00\xffSSH-2.0-NotAProxy\r\n\x16\x03\x01\x00\x05hello\r\n\r\n"
HUGE_HEADER_BYTES = 80 * 1024
SERVER_NAME = "tunnelws-companion"


@dataclass(frozen=True)
class ReplyQuirks:
    """Odd behaviours for the answer to CONNECT (all off by default).

    Attributes:
        http10: status line says ``HTTP/1.0`` (tinyproxy does); applies to every reply.
        connection_close: ``Connection: close`` on the 200 (pproxy does).
        content_length: a non-zero ``Content-Length`` on the 200; a client that
            honours it swallows tunnel bytes.
        transfer_encoding: ``Transfer-Encoding: chunked`` on the 200.
        dribble: every reply is written one byte per write (with a tiny pause,
            so the bytes really arrive as separate segments).
        garbage: answer CONNECT with non-HTTP bytes, then close.
        close_without_reply: close the connection as soon as the CONNECT head is read.
        never_reply: read the CONNECT and stay silent until the client gives up.
        huge_headers: the 200 carries a header block larger than 64 KiB.
        reply_status: answer every CONNECT with this status and an HTML body
            (e.g. 502) instead of opening a tunnel.
    """

    http10: bool = False
    connection_close: bool = False
    content_length: bool = False
    transfer_encoding: bool = False
    dribble: bool = False
    garbage: bool = False
    close_without_reply: bool = False
    never_reply: bool = False
    huge_headers: bool = False
    reply_status: int | None = None

    @classmethod
    def from_names(cls, names: Iterable[str]) -> ReplyQuirks:
        """From CLI-style names such as ``http10``, ``close-without-reply``."""
        known = {f for f in cls.__dataclass_fields__ if f != "reply_status"}
        flags: dict[str, bool] = {}
        for name in names:
            key = name.strip().replace("-", "_")
            if key not in known:
                raise ValueError(f"unknown quirk {name!r} (known: {', '.join(sorted(known))})")
            flags[key] = True
        return cls(**flags)


def build_response(
    status: int,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    *,
    http10: bool = False,
    reason: str | None = None,
) -> bytes:
    """A complete response head (and body) with ``Content-Length`` for non-2xx."""
    version = "HTTP/1.0" if http10 else "HTTP/1.1"
    lines = [f"{version} {status} {reason or reason_phrase(status)}", f"Server: {SERVER_NAME}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if not 200 <= status < 300:
        if body:
            lines.append("Content-Type: text/html; charset=utf-8")
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def connect_success(quirks: ReplyQuirks) -> bytes:
    """The 200 that opens a tunnel, with the configured quirks applied."""
    headers: list[tuple[str, str]] = []
    if quirks.connection_close:
        headers.append(("Connection", "close"))
    if quirks.content_length:
        headers.append(("Content-Length", "1234"))
    if quirks.transfer_encoding:
        headers.append(("Transfer-Encoding", "chunked"))
    if quirks.huge_headers:
        line = "x" * 1000
        headers += [(f"X-Padding-{i}", line) for i in range(HUGE_HEADER_BYTES // 1000 + 1)]
    return build_response(200, headers, http10=quirks.http10, reason="Connection established")


def refusal_response(status: int, detail: str, quirks: ReplyQuirks, *, close: bool) -> bytes:
    """An error reply with an HTML body, like squid/tinyproxy send."""
    headers = [("Connection", "close")] if close else []
    return build_response(status, headers, error_page(status, detail), http10=quirks.http10)
