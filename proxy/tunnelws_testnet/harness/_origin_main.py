"""The origin process of a harness scenario (run inside the origin namespace).

``python -m tunnelws_testnet.harness._origin_main --cert F --key F --log F``
serves the origin test server on every address of the namespace: ws:// on
ports 80 and 8080, wss:// on 443 and 8443, over IPv4 and IPv6. Each request
head the origin receives becomes one JSON line in the log, with the header
*names* only, the peer address, and whether a ``Proxy-Authorization`` header or
one of the secrets in ``TUNNELWS_HARNESS_SECRETS`` (newline-separated) arrived:
that is how the harness sees proxy credentials leaking to the origin, without
writing them anywhere. Prints ``ready`` once every listener is bound; exits 0
on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import ssl
import sys
import time
from collections.abc import Callable
from typing import TextIO

import trio

from tunnelws_testnet.origin import OriginConfig, RequestInfo, serve_origin

from ._scenarios import WS_PORTS, WSS_PORTS


def request_logger(log: TextIO, secrets: list[str]) -> Callable[[RequestInfo], None]:
    """An ``OriginConfig.on_request`` hook writing one JSON line per request head.

    Header values are never written: only their names, and whether a
    ``Proxy-Authorization`` header or one of ``secrets`` arrived.
    """

    def log_request(info: RequestInfo) -> None:
        names = info.header_names()
        raw = "\n".join([info.target, *(value for _, value in info.headers)])
        record = {
            "time": time.time(),
            "event": "request",
            "method": info.method,
            "target": info.target,
            "peer": info.client[0],
            "tls": info.tls,
            "headers": names,
            "proxy_authorization": "proxy-authorization" in names,
            "secret_seen": any(secret in raw for secret in secrets),
        }
        log.write(json.dumps(record) + "\n")
        log.flush()

    return log_request


async def _serve(context: ssl.SSLContext, on_request: Callable[[RequestInfo], None]) -> None:
    async with trio.open_nursery() as nursery:
        for host in ("0.0.0.0", "::"):  # trio binds IPv6 listeners v6-only
            for port, tls_port in zip(WS_PORTS, WSS_PORTS, strict=True):
                config = OriginConfig(
                    host=host,
                    port=port,
                    tls_port=tls_port,
                    ssl_context=context,
                    on_request=on_request,
                )
                await nursery.start(serve_origin, config)
        print("ready", flush=True)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--log", required=True)
    args = parser.parse_args()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    secrets = [line for line in os.environ.get("TUNNELWS_HARNESS_SECRETS", "").splitlines() if line]
    with open(args.log, "a", encoding="utf-8") as log:
        trio.run(_serve, context, request_logger(log, secrets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
