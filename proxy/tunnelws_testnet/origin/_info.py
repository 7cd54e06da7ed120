"""``/info``: what the server actually received, as JSON-ready data.

Shows what a proxy added, stripped or rewrote on the way (headers are kept
in their received order and spelling).
"""

from __future__ import annotations

from typing import Any

import h11

from ._http import PeerInfo


def describe_request(
    request: h11.Request,
    peer: PeerInfo,
    *,
    websocket: bool,
    subprotocol: str | None = None,
    offered_subprotocols: tuple[str, ...] = (),
    transport: str | None = None,
    extensions: str | None = None,
    offered_extensions: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The request line, headers, client address and TLS facts of one request."""
    method = request.method.decode("ascii", errors="replace")
    target = request.target.decode("ascii", errors="replace")
    version = request.http_version.decode("ascii", errors="replace")
    return {
        "request_line": f"{method} {target} HTTP/{version}",
        "method": method,
        "target": target,
        "http_version": version,
        "headers": [
            [name.decode("latin-1"), value.decode("latin-1")]
            for name, value in request.headers.raw_items()
        ],
        "client": {"host": peer.client[0], "port": peer.client[1]},
        "tls": peer.tls,
        "tls_version": peer.tls_version,
        "tls_cipher": peer.cipher,
        "alpn": peer.alpn,
        "websocket": websocket,
        # "websocket" (an upgrade), "fallback" (the HTTP fallback) or "http".
        "transport": transport or ("websocket" if websocket else "http"),
        "subprotocol": subprotocol,
        "offered_subprotocols": list(offered_subprotocols),
        # The Sec-WebSocket-Extensions answer (None: no extension agreed).
        "extensions": extensions,
        "offered_extensions": list(offered_extensions),
    }
