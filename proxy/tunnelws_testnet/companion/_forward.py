"""Rewriting a proxied request for the origin (absolute-form and transparent).

Pure. The proxy forwards one request per client connection and then relays
raw bytes both ways, so a 101 Switching Protocols (when ``Upgrade`` is passed)
becomes a working WebSocket, while a proxy configured to strip ``Upgrade``
turns a WebSocket handshake into a plain GET, as squid and transparent
filters do.
"""

from __future__ import annotations

from ._request import RequestHead

__all__ = ["HOP_BY_HOP", "VIA", "rewrite_request"]

VIA = "1.1 tunnelws-companion"
# RFC 9110 7.6.1 connection-specific fields, plus the proxy's own.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
    }
)


def rewrite_request(
    head: RequestHead, host_header: str, path: str, *, strip_upgrade: bool
) -> bytes:
    """The request head to send to the origin: origin-form target, ``Host``
    from the URL, hop-by-hop fields (and credentials for the proxy) removed,
    ``Upgrade`` kept unless ``strip_upgrade``, ``Via`` added."""
    listed = head.connection_tokens()
    drop = HOP_BY_HOP | listed
    keep_upgrade = not strip_upgrade and "upgrade" in listed and head.get("upgrade") is not None
    lines = [f"{head.method} {path} HTTP/1.1", f"Host: {host_header}"]
    for name, value in head.headers:
        if name.lower() in drop or name.lower() == "host":
            continue
        lines.append(f"{name}: {value}")
    if keep_upgrade:
        lines.append(f"Upgrade: {head.get('upgrade')}")
        lines.append("Connection: Upgrade")
    else:
        lines.append("Connection: close")
    via = head.get("via")
    lines = [line for line in lines if not line.lower().startswith("via:")]
    lines.append(f"Via: {via}, {VIA}" if via else f"Via: {VIA}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
