"""Harness adapter: python-websockets' asyncio client with its own proxy support.

``websockets.asyncio.client.connect(url)`` uses the proxy from the environment
by default (``proxy=True``), like the trio client, and ``SSL_CERT_FILE`` via
``ssl.create_default_context()``.
"""

from __future__ import annotations

import asyncio

from _contract import Contract, echoed, fail, read_contract
from websockets.asyncio.client import connect

NAME = "websockets-asyncio"


async def session(contract: Contract) -> None:
    async with connect(contract.url, open_timeout=10) as websocket:
        for round_ in range(contract.rounds):
            if round_:
                await asyncio.sleep(contract.idle)
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
