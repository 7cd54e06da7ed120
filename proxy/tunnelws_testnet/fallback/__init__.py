"""The server end of tunnelws's HTTP fallback (``docs/fallback-protocol.md``).

A session engine that the origin test server and the gateway share: both
route fallback requests to :meth:`FallbackServer.handle` with the
*application* that serves a new session (the origin's echo, the gateway's
backend WebSocket). Also the browser shim, ``tunnelws.js``::

    server = await nursery.start(run_fallback_server, FallbackConfig())
    ...
    path = parse_fallback_path(target)          # tunnelws.fallback
    if path is not None:
        keep_alive = await server.handle(http, request, path, echo_application)
"""

from ._server import (
    Accepted,
    Application,
    FallbackConfig,
    FallbackServer,
    HTTPExchange,
    Rejected,
    run_fallback_server,
)
from ._session import FallbackSocket, OpenRequest, SessionClosed
from ._shim import SHIM_PATH, shim_js
from ._state import Close

__all__ = [
    "SHIM_PATH",
    "Accepted",
    "Application",
    "Close",
    "FallbackConfig",
    "FallbackServer",
    "FallbackSocket",
    "HTTPExchange",
    "OpenRequest",
    "Rejected",
    "SessionClosed",
    "run_fallback_server",
    "shim_js",
]
