"""The harness client contract, implemented with tunnelws itself.

Reads ``TUNNELWS_URL`` and ``TUNNELWS_MESSAGE`` (repeated
``TUNNELWS_MESSAGE_REPEAT`` times), connects with ``tunnelws.open_websocket``
(proxy from the environment, CA from ``SSL_CERT_FILE``), sends the message and
prints the echo. With ``TUNNELWS_IDLE`` it then stays connected and idle that
many seconds (listening, so a lost connection is noticed at once), sends the
message again and prints the second echo. Everything else is tunnelws's
defaults, whatever the scenario (keepalive pings every 20 s and the HTTP
fallback included; ``--fallback never``: native WebSocket only). It
exits 0 when every echo came back. On failure it prints the error on stderr
and exits with the error's tunnelws exit code, so the harness can check the
failure category.

Run it as ``python -m tunnelws_testnet.harness.clients.tunnelws_client``.
"""

from __future__ import annotations

import os
import sys
from typing import Literal

import trio

from tunnelws import ConnectionClosed, TunnelError, open_websocket

EXIT_UNEXPECTED = 1


def _text(message: str | bytes) -> str:
    return message if isinstance(message, str) else message.decode("utf-8", errors="replace")


async def exchange(fallback: Literal["auto", "never", "only"]) -> None:
    url = os.environ["TUNNELWS_URL"]
    message = os.environ["TUNNELWS_MESSAGE"] * int(os.environ.get("TUNNELWS_MESSAGE_REPEAT", "1"))
    idle = float(os.environ.get("TUNNELWS_IDLE", "0"))
    connect_timeout = float(os.environ.get("TUNNELWS_CONNECT_TIMEOUT", "10"))
    async with open_websocket(url, connect_timeout=connect_timeout, fallback=fallback) as ws:
        await ws.send(message)
        print(_text(await ws.receive()), flush=True)
        if idle:
            with trio.move_on_after(idle):
                unexpected = await ws.receive()  # raises when the connection is lost
                raise RuntimeError(f"unexpected message while idle: {unexpected!r}")
            await ws.send(message)
            print(_text(await ws.receive()), flush=True)


def main(argv: list[str]) -> int:
    # ``--fallback never``: the same client natively only (the harness's own
    # tests judge it as a client without the fallback).
    native_only = argv == ["--fallback", "never"]
    fallback: Literal["auto", "never", "only"] = "never" if native_only else "auto"
    try:
        trio.run(exchange, fallback)
    except TunnelError as exc:
        print(f"tunnelws: {exc.category}: {exc}", file=sys.stderr)
        return exc.exit_code
    except ConnectionClosed as exc:  # closed normally before the echo came back
        print(f"tunnelws: closed before the echo: {exc}", file=sys.stderr)
        return EXIT_UNEXPECTED
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
