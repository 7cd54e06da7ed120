"""Harness adapter: python-websockets' asyncio client with its own proxy support.

``websockets.asyncio.client.connect(url)`` uses the proxy from the environment
by default (``proxy=True``), like the trio client, and ``SSL_CERT_FILE`` via
``ssl.create_default_context()``.
"""

from __future__ import annotations

import asyncio

from _contract import Contract, echoed, fail, read_contract
from websockets.asyncio.client import ClientConnection, connect

NAME = "websockets-asyncio"


async def idle(websocket: ClientConnection, seconds: float) -> None:
    """Stay idle while listening, so a lost connection shows at once."""
    try:
        message = await asyncio.wait_for(websocket.recv(), seconds)
    except asyncio.TimeoutError:  # cancelling recv() loses nothing
        return
    raise RuntimeError(f"unexpected message while idle: {message!r}")


async def session(contract: Contract) -> None:
    async with connect(contract.url, open_timeout=contract.connect_timeout) as websocket:
        for round_ in range(contract.rounds):
            if round_:
                await idle(websocket, contract.idle)
            await websocket.send(contract.message)
            echoed(await websocket.recv())


async def main() -> None:
    contract = read_contract(NAME)
    await asyncio.wait_for(session(contract), contract.deadline)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception as error:  # the library's own error is the result
        fail(NAME, error)
