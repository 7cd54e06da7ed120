"""The WebSocket upgrade as ``check`` sees it: request bytes, the reply head
exactly as received, ``Sec-WebSocket-Accept`` and header comparisons. Pure.

``check`` does the upgrade by hand (not through wsproto's handshake) because
it must report what came back even when it is wrong.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .._grammar import list_tokens
from .._target import Target
from .._version import USER_AGENT
from ._diagnose import HeaderChanges

__all__ = [
    "MAX_HEAD_BYTES",
    "ResponseHead",
    "build_get_request",
    "build_upgrade_request",
    "compare_headers",
    "expected_accept",
    "new_key",
    "parse_response_head",
]

MAX_HEAD_BYTES = 64 * 1024
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# Headers every hop may legitimately rewrite; not worth reporting as changes.
_IGNORED_IN_COMPARISON = frozenset({"host", "content-length"})


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode("ascii")


def expected_accept(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` a server must answer ``key`` with (RFC 6455)."""
    digest = hashlib.sha1((key + _GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def upgrade_headers(target: Target, key: str) -> list[tuple[str, str]]:
    return [
        ("Host", target.host_header),
        ("User-Agent", USER_AGENT),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", "13"),
    ]


def _request(resource: str, headers: Iterable[tuple[str, str]]) -> bytes:
    lines = [f"GET {resource} HTTP/1.1", *(f"{k}: {v}" for k, v in headers), "", ""]
    return "\r\n".join(lines).encode("latin-1")


def build_upgrade_request(target: Target, key: str, resource: str | None = None) -> bytes:
    return _request(resource or target.resource, upgrade_headers(target, key))


def build_get_request(target: Target, resource: str) -> bytes:
    """A plain GET that closes, for reading ``/info`` after a failed upgrade."""
    headers = [
        ("Host", target.host_header),
        ("User-Agent", USER_AGENT),
        ("Upgrade", "websocket"),
        ("Connection", "close, Upgrade"),
        ("Sec-WebSocket-Key", new_key()),
        ("Sec-WebSocket-Version", "13"),
    ]
    return _request(resource, headers)


@dataclass(frozen=True)
class ResponseHead:
    http_version: str
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]

    def get(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.headers if k.lower() == wanted), None)

    def tokens(self, name: str) -> set[str]:
        return list_tokens(value for key, value in self.headers if key.lower() == name.lower())


class BadResponse(ValueError):
    """The reply to the upgrade is not an HTTP response head."""


def parse_response_head(head: bytes) -> ResponseHead:
    """Parse a response head (without the blank line)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise BadResponse(f"not an HTTP response: {lines[0][:80]!r}")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadResponse(f"invalid header line: {line[:80]!r}")
        headers.append((name, value.strip()))
    return ResponseHead(
        parts[0][5:], int(parts[1]), parts[2] if len(parts) > 2 else "", tuple(headers)
    )


def accept_is_valid(head: ResponseHead, key: str) -> bool:
    return (
        head.get("Sec-WebSocket-Accept") == expected_accept(key)
        and "websocket" in head.tokens("Upgrade")
        and "upgrade" in head.tokens("Connection")
    )


def compare_headers(
    sent: Sequence[tuple[str, str]], received: Sequence[Sequence[str]]
) -> HeaderChanges:
    """Which request header names went missing or appeared on the way."""
    sent_names = {name.lower(): name for name, _ in sent}
    received_names = {str(pair[0]).lower(): str(pair[0]) for pair in received}
    stripped = tuple(
        original
        for lower, original in sent_names.items()
        if lower not in received_names and lower not in _IGNORED_IN_COMPARISON
    )
    added = tuple(
        original
        for lower, original in received_names.items()
        if lower not in sent_names and lower not in _IGNORED_IN_COMPARISON
    )
    return HeaderChanges(stripped=stripped, added=added)
