"""The one error taxonomy shared by the library, the CLI exit codes, ``check``
and the harness verdicts.

Every error names the *phase* of the connection path it happened in
(``route``, ``connect``, ``proxy-connect``, ``proxy-tls``, ``tunnel``, ``tls``,
``websocket``, ``connected``) and a stable *category* string used by the
harness (``fail:CATEGORY``). Messages never contain credentials: the code that
raises them only ever formats redacted values.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ConnectionClosed",
    "ConnectionLostError",
    "DirectConnectError",
    "FallbackFailedError",
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

# Bodies of proxy error pages are kept for diagnosis, but bounded: some
# proxies send whole HTML pages with inline images.
MAX_KEPT_BODY = 2048


class TunnelError(Exception):
    """Base class of every error tunnelws raises for a failed connection."""

    exit_code: int = 1
    category: str = "error"

    def __init__(self, message: str, *, phase: str) -> None:
        super().__init__(message)
        self.message = message
        self.phase = phase

    def __str__(self) -> str:
        return self.message


class ProxyConfigError(TunnelError, ValueError):
    """The proxy configuration is invalid (bad URL, unsupported scheme).

    ``source`` names where the value came from: ``"proxy argument"`` or the
    environment variable's name.
    """

    exit_code = 3
    category = "config"

    def __init__(self, message: str, *, source: str | None = None) -> None:
        super().__init__(message, phase="route")
        self.source = source


class DirectConnectError(TunnelError, OSError):
    """The origin could not be reached directly (no proxy on the route)."""

    exit_code = 4
    category = "connect"

    def __init__(self, message: str) -> None:
        super().__init__(message, phase="connect")


class ProxyConnectError(TunnelError, OSError):
    """The proxy itself could not be reached."""

    exit_code = 5
    category = "proxy-connect"

    def __init__(self, message: str) -> None:
        super().__init__(message, phase="proxy-connect")


class ProxyReplyError(TunnelError):
    """The proxy answered the CONNECT with a non-2xx status.

    Carries the reply for diagnosis: ``status``, ``reason``, ``headers`` (in
    order, as received) and the first bytes of ``body``.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        reason: str,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        super().__init__(message, phase="tunnel")
        self.status = status
        self.reason = reason
        self.headers = list(headers)
        self.body = body[:MAX_KEPT_BODY]


class ProxyAuthError(ProxyReplyError):
    """The proxy demanded authentication (407) that could not be satisfied.

    ``schemes`` lists the authentication schemes the proxy offered, in the
    order it offered them (``["Basic", "Digest"]``).
    """

    exit_code = 6
    category = "proxy-auth"

    def __init__(
        self,
        message: str,
        *,
        status: int = 407,
        reason: str = "Proxy Authentication Required",
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        schemes: Sequence[str] = (),
    ) -> None:
        super().__init__(message, status=status, reason=reason, headers=headers, body=body)
        self.schemes = list(schemes)


class ProxyRefusedError(ProxyReplyError):
    """The proxy refused the tunnel with a status other than 2xx or 407."""

    exit_code = 7
    category = "proxy-refused"


class ProxyProtocolError(TunnelError):
    """The proxy's reply was malformed, oversized or missing."""

    exit_code = 8
    category = "proxy-protocol"

    def __init__(self, message: str) -> None:
        super().__init__(message, phase="tunnel")


class TLSError(TunnelError):
    """TLS failed; ``peer`` says with whom: ``"proxy"`` or ``"origin"``."""

    exit_code = 9
    category = "tls"

    def __init__(self, message: str, *, peer: str) -> None:
        super().__init__(message, phase="proxy-tls" if peer == "proxy" else "tls")
        self.peer = peer


class HandshakeError(TunnelError):
    """The WebSocket (or SSE) upgrade was rejected or malformed.

    ``status`` and ``headers`` hold the server's reply when there was one.
    """

    exit_code = 10
    category = "handshake"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        super().__init__(message, phase="websocket")
        self.status = status
        self.headers = list(headers)
        self.body = body[:MAX_KEPT_BODY]


class PhaseTimeoutError(TunnelError, TimeoutError):
    """A phase did not finish within its timeout; ``phase`` says which."""

    exit_code = 11
    category = "timeout"

    def __init__(self, message: str, *, phase: str, timeout: float) -> None:
        super().__init__(message, phase=phase)
        self.timeout = timeout


class ConnectionClosed(Exception):
    """The WebSocket is closed; raised by ``receive()``/``send()`` afterwards.

    A normal closing handshake is not a failure, so this is not a
    :class:`TunnelError`; :class:`ConnectionLostError` (an abnormal end) is
    both. ``code`` and ``reason`` are those of the close frame (1006 and an
    explanation when there was none).
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"WebSocket closed with code {code}" + (f" ({reason})" if reason else ""))
        self.code = code
        self.reason = reason


class ConnectionLostError(TunnelError, ConnectionClosed):
    """The connection was lost after it was open (no closing handshake).

    ``code`` and ``reason`` are the close code and reason the library saw
    (1006 when the transport simply went away, 1011 for a keepalive timeout).
    """

    exit_code = 12
    category = "connection-lost"

    def __init__(self, message: str, *, code: int = 1006, reason: str = "") -> None:
        TunnelError.__init__(self, message, phase="connected")
        self.code = code
        self.reason = reason


class FallbackFailedError(TunnelError):
    """The WebSocket could not pass, and the HTTP fallback failed too.

    ``native`` is why the WebSocket failed, ``fallback`` why the fallback
    did; the message names both. The error is also an instance of the native
    error's class, with its attributes (``status``, ``headers``, ...), and
    ``category``, ``exit_code`` and ``phase`` are the native error's (what
    blocks WebSocket here): code that catches ``ProxyRefusedError`` or
    ``HandshakeError``, scripts that read exit codes and harness verdicts
    mean the same with and without the fallback.
    """

    native: TunnelError
    fallback: TunnelError

    def __new__(cls, native: TunnelError, fallback: TunnelError) -> FallbackFailedError:
        del fallback
        kind = _with_native_class(type(native)) if cls is FallbackFailedError else cls
        error: FallbackFailedError = Exception.__new__(kind)
        return error

    def __init__(self, native: TunnelError, fallback: TunnelError) -> None:
        vars(self).update(vars(native))  # the native error's attributes
        TunnelError.__init__(
            self,
            f"{native.message}; the HTTP fallback failed too: {fallback.category}: {fallback}",
            phase=native.phase,
        )
        self.native = native
        self.fallback = fallback
        self.category = native.category
        self.exit_code = native.exit_code


_COMBINED: dict[type[TunnelError], type[FallbackFailedError]] = {}


def _with_native_class(native: type[TunnelError]) -> type[FallbackFailedError]:
    """``FallbackFailedError`` that is also a ``native`` (one class each)."""
    if issubclass(native, FallbackFailedError):
        return native
    if native not in _COMBINED:
        name = f"FallbackFailedError[{native.__name__}]"
        _COMBINED[native] = type(name, (FallbackFailedError, native), {"__module__": __name__})
    return _COMBINED[native]
