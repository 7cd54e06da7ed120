"""Harness adapter: websocket-client (synchronous) with its documented defaults.

``websocket.create_connection(url)`` reads ``http_proxy`` (``ws://``) or
``https_proxy`` (``wss://``), lower case first, and ``no_proxy`` itself; it
ignores ``ALL_PROXY`` and speaks plain HTTP to the proxy whatever the proxy
URL's scheme. Certificates: ``SSLContext.load_default_certs()``, which
honours ``SSL_CERT_FILE``.
"""

from __future__ import annotations

import websocket
from _contract import echoed, fail, read_contract

NAME = "websocket-client"


def idle(connection: websocket.WebSocket, seconds: float, deadline: float) -> None:
    """Stay idle while listening, so a lost connection shows at once."""
    connection.settimeout(seconds)
    try:
        message = connection.recv()
    except websocket.WebSocketTimeoutException:
        return
    finally:
        connection.settimeout(deadline)
    raise RuntimeError(f"unexpected message while idle: {message!r}")


def main() -> None:
    contract = read_contract(NAME)
    # ``timeout`` bounds every socket operation, the proxy exchange included;
    # once connected, the session gets the contract's overall deadline.
    connection = websocket.create_connection(contract.url, timeout=contract.connect_timeout)
    connection.settimeout(contract.deadline)
    try:
        for round_ in range(contract.rounds):
            if round_:
                idle(connection, contract.idle, contract.deadline)
            connection.send(contract.message)
            echoed(connection.recv())
    finally:
        connection.close()


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # the library's own error is the result
        fail(NAME, error)
