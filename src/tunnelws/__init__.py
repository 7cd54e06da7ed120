"""tunnelws: WebSocket through corporate proxies and firewalls."""

from __future__ import annotations

from ._errors import (
    ConnectionLostError,
    DirectConnectError,
    HandshakeError,
    PhaseTimeoutError,
    ProxyAuthError,
    ProxyConfigError,
    ProxyConnectError,
    ProxyProtocolError,
    ProxyRefusedError,
    ProxyReplyError,
    TLSError,
    TunnelError,
)

__version__ = "0.1.0"

__all__ = [
    "ConnectionLostError",
    "DirectConnectError",
    "HandshakeError",
    "PhaseTimeoutError",
    "ProxyAuthError",
    "ProxyConfigError",
    "ProxyConnectError",
    "ProxyProtocolError",
    "ProxyRefusedError",
    "ProxyReplyError",
    "TLSError",
    "TunnelError",
]
