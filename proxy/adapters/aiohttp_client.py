"""Harness adapter: aiohttp's WebSocket client with ``trust_env=True``.

With ``trust_env`` aiohttp takes the proxy from the environment through
urllib's ``getproxies()`` (and ``no_proxy`` through ``proxy_bypass``).
Certificates: ``ssl.create_default_context()``, which honours
``SSL_CERT_FILE``.
"""

from __future__ import annotations

import asyncio

import aiohttp
from _contract import echoed, fail, read_contract

NAME = "aiohttp"


async def idle(websocket: aiohttp.ClientWebSocketResponse[bool], seconds: float) -> None:
    """Stay idle while listening, so a lost connection shows at once."""
    try:
        message = await websocket.receive(timeout=seconds)
    except asyncio.TimeoutError:
        return
    raise RuntimeError(f"{message.type.name} while idle: {message.data!r}")


async def main() -> None:
    contract = read_contract(NAME)
    # ``connect`` covers getting a connection, the proxy's CONNECT included.
    timeout = aiohttp.ClientTimeout(total=contract.deadline, connect=contract.connect_timeout)
    async with (
        aiohttp.ClientSession(trust_env=True, timeout=timeout) as session,
        session.ws_connect(contract.url) as websocket,
    ):
        for round_ in range(contract.rounds):
            if round_:
                await idle(websocket, contract.idle)
            await websocket.send_str(contract.message)
            echoed(await websocket.receive_str())


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception as error:  # the library's own error is the result
        fail(NAME, error)
