"""The tunnelws gateway: fronts any WebSocket server so that clients reach it
natively or through the HTTP fallback (``docs/gateway.md``).

    gateway = await nursery.start(serve_gateway, GatewayConfig(backend="ws://127.0.0.1:9000"))
    gateway.ws_url("/chat")    # ws://127.0.0.1:PORT/chat, native or fallback

Native WebSocket upgrades (and plain requests) are relayed to the backend
byte for byte; each fallback session becomes one WebSocket to the backend;
``/tunnelws.js`` is the browser shim.
"""

from ._config import GatewayConfig, RunningGateway
from ._server import serve_gateway

__all__ = ["GatewayConfig", "RunningGateway", "serve_gateway"]
