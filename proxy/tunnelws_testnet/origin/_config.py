"""Configuration and bound addresses of the origin test server."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tunnelws_testnet.fallback import FallbackConfig


@dataclass(frozen=True)
class RequestInfo:
    """One request head as the origin received it: what ``/info`` reports.

    Handed to :attr:`OriginConfig.on_request` for every request, before it is
    answered. Headers keep their received order and spelling; values are
    decoded as Latin-1 (HTTP's byte-preserving text encoding).
    """

    method: str
    target: str
    http_version: str
    headers: tuple[tuple[str, str], ...]
    client: tuple[str, int]  # the peer's (host, port)
    tls: bool
    tls_version: str | None = None
    tls_cipher: str | None = None
    alpn: str | None = None

    @property
    def request_line(self) -> str:
        return f"{self.method} {self.target} HTTP/{self.http_version}"

    def header_names(self) -> list[str]:
        """The header names, lower-cased, in received order."""
        return [name.lower() for name, _ in self.headers]

    def to_json(self) -> dict[str, Any]:
        """The same fields as ``/info`` (without its WebSocket-only ones)."""
        return {
            "request_line": self.request_line,
            "method": self.method,
            "target": self.target,
            "http_version": self.http_version,
            "headers": [[name, value] for name, value in self.headers],
            "client": {"host": self.client[0], "port": self.client[1]},
            "tls": self.tls,
            "tls_version": self.tls_version,
            "tls_cipher": self.tls_cipher,
            "alpn": self.alpn,
        }


@dataclass
class OriginConfig:
    """How :func:`~tunnelws_testnet.origin.serve_origin` listens and what it tolerates.

    Port 0 (the default) lets the OS pick a free port; the bound ports come back
    in :class:`OriginAddresses`. The TLS listener exists only when ``tls_port``
    is not ``None`` and then needs ``ssl_context`` (see
    :func:`~tunnelws_testnet.origin.make_test_ca`).
    """

    host: str = "127.0.0.1"
    port: int = 0
    tls_port: int | None = None
    ssl_context: ssl.SSLContext | None = None
    #: Largest WebSocket message accepted; a bigger one closes with 1009.
    max_message_size: int = 16 * 1024 * 1024
    #: Largest request head (request line + headers); a bigger one gets 431.
    max_header_size: int = 16 * 1024
    #: Seconds a client has to deliver a complete request head (including the
    #: TLS handshake on the TLS port); also the keep-alive idle limit.
    request_timeout: float = 10.0
    #: Seconds one write may wait for a client that does not read; after that
    #: the connection is dropped instead of buffering without bound.
    send_timeout: float = 30.0
    #: Seconds a WebSocket may stay silent (no frame at all) before it is closed.
    websocket_idle_timeout: float = 300.0
    #: Seconds to wait for the peer's Close frame / EOF after we sent ours.
    close_timeout: float = 5.0
    #: Accept permessage-deflate (RFC 7692) when the client offers it.
    compression: bool = True
    #: Called with every request head received (any path, also ones answered
    #: 404 or rejected), before it is answered, in the connection's task: keep
    #: it quick and non-blocking. An exception it raises is not caught (it
    #: stops the server), so a broken hook fails loudly.
    on_request: Callable[[RequestInfo], None] | None = None
    #: The HTTP fallback's sessions on /echo and /info (its max_message_size
    #: is the one above).
    fallback: FallbackConfig = field(default_factory=FallbackConfig)

    def __post_init__(self) -> None:
        if self.tls_port is not None and self.ssl_context is None:
            raise ValueError("tls_port needs ssl_context (see make_test_ca())")
        if self.max_message_size < 1:
            raise ValueError("max_message_size must be positive")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True)
class OriginAddresses:
    """Where a running origin server listens: ``(host, port)`` pairs."""

    http: tuple[str, int]
    https: tuple[str, int] | None = None

    def http_url(self, path: str = "/") -> str:
        """``http://host:port/path`` for the plain listener."""
        host, port = self.http
        return f"http://{_url_host(host)}:{port}{path}"

    def https_url(self, path: str = "/") -> str:
        """``https://host:port/path`` for the TLS listener (ValueError without one)."""
        host, port = self._tls()
        return f"https://{_url_host(host)}:{port}{path}"

    def ws_url(self, path: str = "/echo") -> str:
        """``ws://host:port/path`` for the plain listener (IPv6 hosts bracketed)."""
        host, port = self.http
        return f"ws://{_url_host(host)}:{port}{path}"

    def wss_url(self, path: str = "/echo") -> str:
        """``wss://host:port/path`` for the TLS listener (ValueError without one)."""
        host, port = self._tls()
        return f"wss://{_url_host(host)}:{port}{path}"

    def _tls(self) -> tuple[str, int]:
        if self.https is None:
            raise ValueError("this origin server has no TLS listener (tls_port was None)")
        return self.https
