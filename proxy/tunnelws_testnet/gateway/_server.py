"""The gateway's listener and routing: the fallback endpoints, the browser
shim, and everything else relayed to the backend as it is."""

from __future__ import annotations

import logging
from functools import partial

import h11
import trio

from tunnelws_testnet.fallback import SHIM_PATH, FallbackServer, run_fallback_server, shim_js
from tunnelws_testnet.origin import OriginConfig
from tunnelws_testnet.origin._http import HTTPConnection, describe_peer, serve_http

from ._backend import backend_application
from ._config import GatewayConfig, RunningGateway
from ._native import relay_to_backend

__all__ = ["serve_gateway"]

logger = logging.getLogger("tunnelws_testnet.gateway")


async def serve_gateway(
    config: GatewayConfig,
    *,
    task_status: trio.TaskStatus[RunningGateway] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled: ``gateway = await nursery.start(serve_gateway, config)``."""
    listeners = await trio.open_tcp_listeners(config.port, host=config.host)
    if config.port == 0 and len(listeners) > 1:
        for extra in listeners[1:]:  # port 0 on several addresses: several ports
            await extra.aclose()
        listeners = listeners[:1]
    host, port = listeners[0].socket.getsockname()[:2]
    # The connection limits are the origin server's (one HTTP implementation).
    limits = OriginConfig(
        max_header_size=config.max_header_size,
        request_timeout=config.request_timeout,
        send_timeout=config.send_timeout,
    )
    async with trio.open_nursery() as nursery:
        fallback = await nursery.start(run_fallback_server, config.fallback)

        async def handler(stream: trio.SocketStream) -> None:
            await serve_http(stream, limits, partial(_route, config=config, fallback=fallback))

        await nursery.start(trio.serve_listeners, handler, listeners)
        running = RunningGateway(str(host), int(port), config.backend)
        logger.info("gateway on %s:%s for %s", host, port, config.backend)
        task_status.started(running)


async def _route(
    http: HTTPConnection, request: h11.Request, *, config: GatewayConfig, fallback: FallbackServer
) -> bool:
    target = request.target.decode("ascii", errors="replace")
    client = describe_peer(http.stream).client[0]
    handled = await fallback.route(http, request, lambda _: backend_application(config, client))
    if handled is not None:
        return handled
    if target.partition("?")[0] == SHIM_PATH and request.method in (b"GET", b"HEAD"):
        await http.discard_body()
        await http.send_body(200, [], shim_js(), content_type="text/javascript; charset=utf-8",
                             head_only=request.method == b"HEAD")
        return True
    await relay_to_backend(http, request, config, client)
    return False
