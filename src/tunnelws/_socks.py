"""SOCKS5 tunnels (RFC 1928, username/password per RFC 1929) via python-socks.

``socks5h://`` sends the host name to the proxy unresolved (the proxy does
the DNS lookup, as a CONNECT proxy does); ``socks5://`` resolves it on the
client first and sends the address. python-socks speaks the protocol; this
module applies the time budget and maps its errors onto the tunnelws taxonomy.
"""

from __future__ import annotations

import ipaddress

import trio

from ._auth import Credentials
from ._errors import (
    DirectConnectError,
    ProxyAuthError,
    ProxyConnectError,
    ProxyProtocolError,
    ProxyRefusedError,
)
from ._proxy_url import ProxyURL
from ._target import Target
from ._timeouts import PhaseClock
from ._trace import Trace

__all__ = ["open_socks_tunnel"]

# RFC 1928 section 6 reply codes, for messages.
SOCKS5_REPLIES = {
    1: "general SOCKS server failure",
    2: "connection not allowed by ruleset",
    3: "network unreachable",
    4: "host unreachable",
    5: "connection refused",
    6: "TTL expired",
    7: "command not supported",
    8: "address type not supported",
}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def open_socks_tunnel(
    proxy: ProxyURL,
    target: Target,
    credentials: Credentials | None,
    clock: PhaseClock,
    trace: Trace | None,
) -> trio.SocketStream:
    """A stream to ``target`` through the SOCKS5 ``proxy``.

    Errors: :class:`ProxyConnectError` (proxy unreachable),
    :class:`ProxyAuthError` (credentials missing or refused; ``status`` 407
    is used as a stand-in since SOCKS has no HTTP status),
    :class:`ProxyRefusedError` (``status`` is the SOCKS reply code),
    :class:`ProxyProtocolError` (not a SOCKS5 server),
    :class:`DirectConnectError` (``socks5://`` could not resolve the name
    locally).
    """
    from python_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError, ProxyType
    from python_socks.async_.trio import Proxy

    remote_dns = proxy.scheme == "socks5h"
    if trace:
        who = "the proxy" if remote_dns or _is_ip(target.host) else "this client"
        trace(f"* SOCKS5 via {proxy.authority} to {target.authority} (name resolved by {who})")
    client = Proxy(
        ProxyType.SOCKS5,
        proxy.host,
        proxy.port,
        username=credentials.username if credentials else None,
        password=credentials.password if credentials else None,
        rdns=remote_dns,
    )
    with clock.phase("tunnel", f"negotiating SOCKS5 with {proxy.authority}"):
        try:
            # python-socks has its own timeout; the phase clock is the real one.
            sock = await client.connect(target.host, target.port, timeout=clock.timeout + 1)
        except ProxyConnectionError as exc:
            raise ProxyConnectError(
                f"cannot connect to proxy {proxy.authority}: {exc.strerror or exc}"
            ) from None
        except ProxyTimeoutError as exc:  # pragma: no cover - the clock fires first
            raise ProxyProtocolError(f"SOCKS5 proxy {proxy.authority}: {exc}") from None
        except ProxyError as exc:
            raise _map_error(exc, exc.error_code, proxy, target, credentials) from None
        except OSError as exc:  # socks5:// resolves locally before talking to the proxy
            raise DirectConnectError(
                f"cannot resolve {target.host!r} on this client ({exc.strerror or exc}); "
                "socks5h:// lets the proxy resolve it"
            ) from None
    if trace:
        trace(f"* SOCKS5 tunnel to {target.authority} established")
    return trio.SocketStream(sock)


def _map_error(
    exc: Exception,
    code: int | None,
    proxy: ProxyURL,
    target: Target,
    credentials: Credentials | None,
) -> Exception:
    text = str(exc)
    lowered = text.lower()
    if "authentication" in lowered or "auth" in lowered:
        if credentials is None:
            message = (
                f"SOCKS5 proxy {proxy.authority} requires a user name and password "
                "(socks5h://USER:PASSWORD@HOST:PORT or proxy_auth=)"
            )
        else:
            message = (
                f"SOCKS5 proxy {proxy.authority} refused the credentials for user "
                f"{credentials.username!r} ({text})"
            )
        return ProxyAuthError(message, reason=text, schemes=["username/password"])
    if code is not None:
        reason = SOCKS5_REPLIES.get(code, f"reply code {code}")
        return ProxyRefusedError(
            f"SOCKS5 proxy {proxy.authority} refused the tunnel to {target.authority}: {reason}",
            status=code,
            reason=reason,
        )
    hint = ""
    if "closed" in lowered:
        # pproxy, for one, hangs up on missing or bad credentials instead of replying.
        hint = (
            " (some SOCKS servers close the connection on wrong credentials)"
            if credentials is not None
            else " (the proxy may require a user name and password: socks5h://USER:PASSWORD@HOST)"
        )
    return ProxyProtocolError(f"SOCKS5 proxy {proxy.authority} broke the protocol: {text}{hint}")
