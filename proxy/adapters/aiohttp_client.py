"""Harness adapter: aiohttp's WebSocket client, configured as aiohttp documents.

Two ways, one per matrix column:

- ``aiohttp_client.py``: ``ClientSession(trust_env=True)``. aiohttp then takes
  the proxy from the environment itself (``helpers.get_env_proxy_for_url``:
  urllib's ``getproxies()``, picked by the URL's scheme, so ``ws_proxy`` for
  ``ws://`` and ``wss_proxy`` for ``wss://``; ``no_proxy`` through
  ``proxy_bypass``). Nothing is translated.
- ``aiohttp_client.py --proxy-argument``: ``session.ws_connect(url, proxy=...)``,
  as aiohttp's proxy documentation shows, credentials in the proxy URL. aiohttp
  does not read the variables in this mode, so the adapter hands it the one a
  user's code typically reads (:func:`_contract.scheme_proxy`: ``https_proxy``
  for ``wss://``, ``http_proxy`` for ``ws://``) and says so on stderr.

Certificates: ``ssl.create_default_context()``, which honours ``SSL_CERT_FILE``.
"""

from __future__ import annotations

import asyncio
import sys

import aiohttp
from _contract import echoed, fail, read_contract, scheme_proxy, translated

NAME = "aiohttp"
NAME_PROXY_ARGUMENT = "aiohttp-proxy-arg"


async def idle(websocket: aiohttp.ClientWebSocketResponse[bool], seconds: float) -> None:
    """Stay idle while listening, so a lost connection shows at once."""
    try:
        message = await websocket.receive(timeout=seconds)
    except asyncio.TimeoutError:
        return
    raise RuntimeError(f"{message.type.name} while idle: {message.data!r}")


async def main(name: str) -> None:
    contract = read_contract(name)
    proxy_argument = name == NAME_PROXY_ARGUMENT
    proxy = None
    if proxy_argument:
        variable, proxy = scheme_proxy(contract.url)
        if proxy:
            translated(name, f"{variable} -> ws_connect(proxy=...)")
    # ``connect`` covers getting a connection, the proxy's CONNECT included.
    timeout = aiohttp.ClientTimeout(total=contract.deadline, connect=contract.connect_timeout)
    async with (
        aiohttp.ClientSession(trust_env=not proxy_argument, timeout=timeout) as session,
        session.ws_connect(contract.url, proxy=proxy) as websocket,
    ):
        for round_ in range(contract.rounds):
            if round_:
                await idle(websocket, contract.idle)
            await websocket.send_str(contract.message)
            echoed(await websocket.receive_str())


if __name__ == "__main__":
    name = NAME_PROXY_ARGUMENT if "--proxy-argument" in sys.argv[1:] else NAME
    try:
        asyncio.run(main(name))
    except Exception as error:  # the library's own error is the result
        fail(name, error)
