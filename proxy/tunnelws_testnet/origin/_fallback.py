"""``/echo`` and ``/info`` over the HTTP fallback: the origin's applications
for the fallback engine, with the same semantics as its WebSocket endpoints
(echo with types, the first offered subprotocol, the close code and reason
echoed; ``/info`` first sends what the server received)."""

from __future__ import annotations

import json
from typing import Any

import trio

from tunnelws_testnet.fallback import (
    Accepted,
    Application,
    Close,
    FallbackSocket,
    SessionClosed,
)

__all__ = ["echo_application", "info_application"]


async def _echo(
    socket: FallbackSocket,
    task_status: trio.TaskStatus[Accepted],
    *,
    first_message: str | None = None,
) -> None:
    offered = socket.request.subprotocols
    task_status.started(Accepted(subprotocol=offered[0] if offered else None))
    try:
        if first_message is not None:
            await socket.send(first_message)
        while True:
            message = await socket.receive()
            if isinstance(message, Close):
                if message.clean:
                    await socket.close(message.code, message.reason)
                return
            await socket.send(message)
    except SessionClosed:
        # We closed (a message too big: 1009); the client's close follows.
        while not isinstance(await socket.receive(), Close):
            pass


def echo_application() -> Application:
    return _echo


def info_application(info: dict[str, Any]) -> Application:
    """``info`` is what ``/info`` says of the ``open`` request; the session's
    handshake headers (sent in the open request's body) are added to its
    ``headers``, as a WebSocket handshake would have carried them."""

    async def run(socket: FallbackSocket, task_status: trio.TaskStatus[Accepted]) -> None:
        offered = socket.request.subprotocols
        described = {
            **info,
            "headers": [*info["headers"], *([n, v] for n, v in socket.request.headers)],
            "websocket": True,
            "transport": "fallback",
            "subprotocol": offered[0] if offered else None,
            "offered_subprotocols": list(offered),
            "fallback": {
                "session": socket.session_id,
                "headers_in_body": [[n, v] for n, v in socket.request.headers],
            },
        }
        await _echo(socket, task_status, first_message=json.dumps(described))

    return run
