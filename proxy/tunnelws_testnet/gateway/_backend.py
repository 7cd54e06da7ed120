"""Each fallback session becomes one ordinary WebSocket to the backend,
opened with the tunnelws client, and messages are relayed both ways with
their types; closes are passed on with their code and reason."""

from __future__ import annotations

import logging

import trio

from tunnelws import (
    ConnectionClosed,
    ConnectionLostError,
    HandshakeError,
    TunnelError,
    WebSocketConnection,
    open_websocket,
)
from tunnelws_testnet.fallback import (
    Accepted,
    Application,
    Close,
    FallbackSocket,
    OpenRequest,
    Rejected,
    SessionClosed,
)

from ._config import GatewayConfig

__all__ = ["backend_application", "backend_headers"]

logger = logging.getLogger("tunnelws_testnet.gateway")

# A browser sets these on the open POST itself, where page scripts cannot
# forge them: they win over the same names in the request body.
BROWSER_HEADERS = ("Origin", "Cookie", "User-Agent")
NO_STATUS = 1005


def backend_headers(request: OpenRequest, client: str) -> list[tuple[str, str]]:
    """The handshake headers for the backend: the session's own, the
    browser's Origin/Cookie/User-Agent, and who the client is."""
    own = {name.lower(): name for name in BROWSER_HEADERS if request.header(name) is not None}
    headers = [(n, v) for n, v in request.headers if n.lower() not in own]
    headers += [(name, request.header(name) or "") for name in own.values()]
    forwarded = request.header("X-Forwarded-For")
    headers = [(n, v) for n, v in headers if n.lower() != "x-forwarded-for"]
    headers.append(("X-Forwarded-For", f"{forwarded}, {client}" if forwarded else client))
    return headers


def backend_application(config: GatewayConfig, client: str) -> Application:
    """The application for one new session from ``client`` (an IP address)."""

    async def run(socket: FallbackSocket, task_status: trio.TaskStatus[Accepted]) -> None:
        request = socket.request
        url = config.backend_url(request.resource)
        started = False
        try:
            async with open_websocket(
                url,
                proxy=None,
                subprotocols=request.subprotocols,
                extra_headers=backend_headers(request, client),
                connect_timeout=config.connect_timeout,
                close_timeout=config.close_timeout,
                max_message_size=config.fallback.limits.max_message_size,
                # The backend is a WebSocket server by definition: a failed
                # upgrade is its answer, not a path for the fallback.
                fallback="never",
            ) as ws:
                task_status.started(Accepted(subprotocol=ws.subprotocol))
                started = True
                await _relay(socket, ws)
        except HandshakeError as exc:
            if started:
                raise
            raise Rejected(f"the backend refused the WebSocket: {exc}",
                           backend_status=exc.status) from None
        except TunnelError as exc:
            if started:
                logger.info("backend connection for %s ended: %s", socket.session_id, exc)
                await socket.close(1006, "the backend connection was lost")
                return
            raise Rejected(f"cannot reach the backend: {exc}") from None

    return run


async def _relay(socket: FallbackSocket, ws: WebSocketConnection) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_client_to_backend, socket, ws)
        nursery.start_soon(_backend_to_client, socket, ws)


async def _client_to_backend(socket: FallbackSocket, ws: WebSocketConnection) -> None:
    while True:
        message = await socket.receive()
        if isinstance(message, Close):
            if message.clean:
                code = NO_STATUS if message.code is None else message.code
                await ws.close(code, message.reason if message.code is not None else "")
            else:
                await ws.close(1001, "the fallback session ended")  # the client went away
            return
        try:
            await ws.send(message)
        except ConnectionClosed:
            # The backend is closing: its close reaches the client through
            # the other direction, and the client's answer ends this loop.
            continue


async def _backend_to_client(socket: FallbackSocket, ws: WebSocketConnection) -> None:
    try:
        async for message in ws:
            await socket.send(message)
    except ConnectionLostError as exc:
        await socket.close(1006, exc.reason[:100])
        return
    except SessionClosed:
        return
    code = ws.close_code
    await socket.close(None if code in (None, NO_STATUS) else code, ws.close_reason)
