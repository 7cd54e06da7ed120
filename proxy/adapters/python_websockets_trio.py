"""Harness adapter: python-websockets' trio client with its own proxy support.

``websockets.trio.client.connect(url, proxy=True)`` finds the proxy in the
environment itself (``wss_proxy``/``ws_proxy``, ``https_proxy``,
``http_proxy``, ``all_proxy`` via urllib, bypass via ``no_proxy``) and trusts
the CAs of ``ssl.create_default_context()``, which honours ``SSL_CERT_FILE``.
"""

from __future__ import annotations

import trio
from _contract import echoed, fail, read_contract
from websockets.trio.client import connect

NAME = "websockets-trio"


async def main() -> None:
    contract = read_contract(NAME)
    with trio.fail_after(contract.deadline):
        async with connect(
            contract.url, proxy=True, open_timeout=contract.connect_timeout
        ) as websocket:
            for round_ in range(contract.rounds):
                if round_:
                    # Idle while listening, so a lost connection shows at once.
                    with trio.move_on_after(contract.idle):
                        message = await websocket.recv()
                        raise RuntimeError(f"unexpected message while idle: {message!r}")
                await websocket.send(contract.message)
                echoed(await websocket.recv())


if __name__ == "__main__":
    try:
        trio.run(main)
    except Exception as error:  # the library's own error is the result
        fail(NAME, error)
