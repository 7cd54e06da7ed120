"""The origin test server: WebSocket echo, handshake info, SSE and a browser page.

One trio server speaks HTTP/1.1 (h11) and WebSocket (wsproto) on the same
port, optionally also over TLS on a second port::

    ca = make_test_ca()
    config = OriginConfig(tls_port=0, ssl_context=ca.server_context())
    addresses = await nursery.start(serve_origin, config)
    addresses.ws_url()   # ws://127.0.0.1:PORT/echo
    addresses.wss_url()  # wss://127.0.0.1:PORT/echo (trust ca.ca_pem_path)

Endpoints: ``/echo`` (WebSocket echo), ``/info`` (what the server received,
over WebSocket or plain GET), ``/timestamp`` (server-sent events), ``/`` (the
browser compatibility page) and ``/config`` (the ports, for the page). See
``docs/origin-server.md``.
"""

from __future__ import annotations

from ._config import OriginAddresses, OriginConfig, RequestInfo
from ._server import serve_origin
from ._tls import LOOPBACK_NAMES, LocalCA, make_test_ca

__all__ = [
    "LOOPBACK_NAMES",
    "LocalCA",
    "OriginAddresses",
    "OriginConfig",
    "RequestInfo",
    "make_test_ca",
    "serve_origin",
]
