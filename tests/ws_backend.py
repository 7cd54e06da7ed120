"""A third-party WebSocket server (python-websockets) for the gateway tests,
run as a subprocess: ``python ws_backend.py PORT``, prints ``ready`` when
listening.

``/echo`` (and any path) echoes every message with its type and selects the
first subprotocol it knows; ``/headers`` first sends the handshake's headers
and path as JSON; ``/reject`` refuses the handshake with 403; ``/bye`` closes
at once with 4002 "backend says bye". A client's close code and reason are
echoed (websockets does that itself).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from http import HTTPStatus

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

KNOWN_SUBPROTOCOLS = ("chat.v2", "chat.v1")


async def handler(ws: ServerConnection) -> None:
    path = ws.request.path if ws.request is not None else "/"
    if path.startswith("/headers") and ws.request is not None:
        await ws.send(json.dumps({"path": path, "headers": list(ws.request.headers.raw_items())}))
    if path.startswith("/bye"):
        await ws.close(4002, "backend says bye")
        return
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:
        pass


def select_subprotocol(ws: ServerConnection, offered: Sequence[str]) -> str | None:
    return next((p for p in offered if p in KNOWN_SUBPROTOCOLS), None)


def process_request(ws: ServerConnection, request: Request) -> Response | None:
    if request.path.startswith("/reject"):
        return ws.respond(HTTPStatus.FORBIDDEN, "no WebSocket for you\n")
    return None


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port, select_subprotocol=select_subprotocol,
                     process_request=process_request, max_size=16 * 1024 * 1024,
                     compression=None):
        print("ready", flush=True)
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
