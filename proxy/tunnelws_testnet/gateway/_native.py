"""Native WebSocket upgrades (and plain requests) relayed to the backend as
they are: the request head with the backend's Host and path, then bytes both
ways, so frames, extensions and closes pass untouched."""

from __future__ import annotations

import h11
import trio

from tunnelws_testnet.companion._relay import relay
from tunnelws_testnet.companion._toxics import Toxics
from tunnelws_testnet.origin._http import HTTPConnection

from ._config import GatewayConfig

__all__ = ["relay_to_backend"]

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer",
                        "transfer-encoding", "upgrade", "host", "x-forwarded-for"})


def rewrite_head(request: h11.Request, config: GatewayConfig, client: str) -> bytes:
    """The request head for the backend (pure)."""
    target = config.backend_target
    resource = config.backend_resource(request.target.decode("ascii", "replace"))
    upgrade = next((v for k, v in request.headers if k == b"upgrade"), None)
    lines = [
        b"%s %s HTTP/1.1" % (request.method, resource.encode("ascii")),
        b"Host: " + target.host_header.encode("ascii"),
    ]
    forwarded = None
    for name, value in request.headers:
        if name == b"x-forwarded-for":
            forwarded = value
        if name not in {n.encode() for n in HOP_BY_HOP}:
            lines.append(name + b": " + value)
    chain = (forwarded + b", " if forwarded else b"") + client.encode("ascii")
    lines.append(b"X-Forwarded-For: " + chain)
    if upgrade is not None:
        lines += [b"Upgrade: " + upgrade, b"Connection: Upgrade"]
    else:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def relay_to_backend(
    http: HTTPConnection, request: h11.Request, config: GatewayConfig, client: str
) -> None:
    """Forward one request and relay the connection until either side ends."""
    await http.discard_body()
    target = config.backend_target
    backend: trio.SocketStream | None = None
    with trio.move_on_after(config.connect_timeout):
        try:
            backend = await trio.open_tcp_stream(target.host, target.port)
        except OSError as exc:
            await http.send_error(502, f"cannot reach the backend: {exc.strerror or exc}")
            return
    if backend is None:
        await http.send_error(504, "timed out connecting to the backend")
        return
    pipelined, _closed = http.h11.trailing_data
    try:
        await backend.send_all(rewrite_head(request, config, client) + pipelined)
    except trio.BrokenResourceError:
        await trio.aclose_forcefully(backend)
        await http.send_error(502, "the backend closed the connection")
        return
    await relay(http.stream, backend, Toxics())
