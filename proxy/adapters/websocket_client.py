"""Harness adapter: websocket-client (synchronous) with its documented defaults.

``websocket.create_connection(url)`` reads ``http_proxy`` (``ws://``) or
``https_proxy`` (``wss://``), lower case first, and ``no_proxy`` itself; it
ignores ``ALL_PROXY`` and speaks plain HTTP to the proxy whatever the proxy
URL's scheme. A SOCKS proxy it takes only as options (``proxy_type="socks5h"``,
``http_proxy_host``, ``http_proxy_port``, ``http_proxy_auth``, as its
documentation shows): when that variable holds a ``socks…://`` URL, the
adapter passes it so, and says so on stderr. Certificates:
``SSLContext.load_default_certs()``, which honours ``SSL_CERT_FILE``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import websocket
from _contract import echoed, fail, read_contract, scheme_proxy, translated

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


def socks_options(url: str) -> dict[str, Any]:
    """The documented SOCKS options, when the variable websocket-client reads
    for ``url`` holds a SOCKS proxy (else none: it reads HTTP proxies itself)."""
    variable, value = scheme_proxy(url)
    proxy = urlsplit(value)
    if not proxy.scheme.startswith("socks"):
        return {}
    translated(NAME, f"{variable} ({proxy.scheme}) -> proxy_type, http_proxy_host/port/auth")
    options: dict[str, Any] = {
        "proxy_type": proxy.scheme,
        "http_proxy_host": proxy.hostname,
        "http_proxy_port": proxy.port or 1080,
    }
    if proxy.username is not None:
        options["http_proxy_auth"] = (unquote(proxy.username), unquote(proxy.password or ""))
    return options


def main() -> None:
    contract = read_contract(NAME)
    # ``timeout`` bounds every socket operation, the proxy exchange included;
    # once connected, the session gets the contract's overall deadline.
    connection = websocket.create_connection(
        contract.url, timeout=contract.connect_timeout, **socks_options(contract.url)
    )
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
