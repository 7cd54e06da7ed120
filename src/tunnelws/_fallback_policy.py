"""When the HTTP fallback may get around a failed WebSocket: one rule for
:func:`~tunnelws.open_websocket` and ``tunnelws check``. Pure.

The fallback carries the session over ordinary requests along the same
route, so it helps exactly where something on the path treats WebSocket
differently from plain HTTP:

* the proxy refuses CONNECT by policy (400, 403, 405, 406, 501) for a
  ``ws://`` URL: the fallback's ``http://`` requests go to the proxy in
  absolute form, no CONNECT needed. For ``wss://`` the fallback would need
  the same CONNECT, so a refusal is final (as is a SOCKS refusal, and a 502
  to 504, where the proxy could not reach the origin);
* the upgrade is answered with something else than 101 (``Upgrade``
  stripped, a filter's error page), the connection is closed or reset
  during the upgrade, or a 101 is followed by nothing (``HandshakeError``
  with status 101, see ``_websocket.CONFIRM_TIMEOUT``).

Never past a TLS verification failure (falling back would bypass a security
check), a 407 (the fallback needs the same credentials) or a timeout (no
explicit answer: a fallback would wait as long again); nor for an unreachable
proxy or origin, or a bad configuration.
"""

from __future__ import annotations

from ._errors import HandshakeError, ProxyRefusedError, TunnelError
from ._target import Target

__all__ = ["POLICY_REFUSALS", "fallback_may_help", "fallback_reason"]

#: CONNECT refusals that mean "not this method here", not "cannot reach".
POLICY_REFUSALS = frozenset({400, 403, 405, 406, 501})


def fallback_may_help(category: str, status: int | None, *, secure: bool) -> bool:
    """Whether a failure of this taxonomy ``category`` (with the reply's
    ``status``, if any) for a ``wss://`` (``secure``) or ``ws://`` URL is one
    the fallback can get around."""
    if category == "proxy-refused":
        return not secure and status in POLICY_REFUSALS
    return category == "handshake"


def fallback_reason(error: TunnelError, target: Target) -> str | None:
    """Why the fallback should carry a WebSocket that failed with ``error``,
    in words for ``fallback_reason`` and ``-v``; None when it cannot help."""
    status = error.status if isinstance(error, (ProxyRefusedError, HandshakeError)) else None
    if not fallback_may_help(error.category, status, secure=target.secure):
        return None
    if isinstance(error, ProxyRefusedError):
        return f"the proxy refused CONNECT ({error.status} {error.reason})".replace(" )", ")")
    if status == 101:
        return "the 101 Switching Protocols was followed by nothing"
    if status is not None:
        return f"the upgrade was answered with {status} instead of 101"
    return f"the upgrade failed ({error})"
