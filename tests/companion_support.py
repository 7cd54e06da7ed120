"""Helpers for the companion proxy tests: real origins (python-websockets'
trio server, a raw TCP echo), curl, and a raw CONNECT client for byte-level
checks."""

from __future__ import annotations

import json
import ssl
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio
import trustme
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.trio.server import ServerConnection, serve

import tunnelws
from conftest import require_binary
from tunnelws_testnet.companion import ProxyConfig, RunningProxy, serve_proxy

__all__ = [
    "Origin",
    "OriginCA",
    "RawReply",
    "echo_through",
    "raw_connect",
    "run_curl",
    "start_origin",
    "start_proxy",
    "start_tcp_echo",
    "wait_until_idle",
]


@dataclass
class Origin:
    host: str
    port: int
    secure: bool
    # Header lists of every request the origin received (plain GETs and handshakes).
    requests: list[dict[str, str]] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.secure else 'ws'}://{self.host}:{self.port}/echo"

    @property
    def http_url(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.host}:{self.port}/info"


class OriginCA:
    """A trustme CA for origins, with client and server contexts."""

    def __init__(self) -> None:
        self.ca = trustme.CA()
        self.server_cert = self.ca.issue_cert("127.0.0.1", "localhost")

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server_cert.configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


async def start_origin(nursery: trio.Nursery, ssl_context: ssl.SSLContext | None = None) -> Origin:
    """python-websockets' trio server: ``/echo`` echoes; a plain GET gets a
    200 whose JSON body lists the request headers the origin received."""
    origin = Origin("127.0.0.1", 0, ssl_context is not None)

    async def echo(connection: ServerConnection) -> None:
        async for message in connection:
            await connection.send(message)

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        origin.requests.append({k.lower(): v for k, v in request.headers.raw_items()})
        if "upgrade" in request.headers.get("connection", "").lower():
            return None
        body = json.dumps(origin.requests[-1]).encode()
        headers = Headers(
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return Response(200, "OK", headers, body)

    server = await nursery.start(
        lambda task_status: serve(
            echo,
            0,
            host="127.0.0.1",
            ssl=ssl_context,
            process_request=process_request,
            compression=None,
            task_status=task_status,
        )
    )
    origin.port = server.listeners[0].socket.getsockname()[1]
    return origin


async def echo_through(
    url: str, port: int, trace: list[str] | None = None, **options: Any
) -> bytes:
    """Open a tunnel to 127.0.0.1:``port`` (a TCP echo) through the proxy
    ``url``, send ``ping``, return what comes back; trace lines go to ``trace``."""
    lines = trace if trace is not None else []
    stream = await tunnelws.open_tunnel(
        "127.0.0.1", port, proxy=url, trace=lines.append, connect_timeout=5, **options
    )
    async with stream:
        await stream.send_all(b"ping")
        with trio.fail_after(5):
            return bytes(await stream.receive_some(100))


async def start_tcp_echo(nursery: trio.Nursery, host: str = "127.0.0.1") -> int:
    """A raw TCP echo server on loopback; returns its port."""

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                while data := await stream.receive_some(65536):
                    await stream.send_all(data)
            except trio.BrokenResourceError:
                pass

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host=host))
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def start_proxy(nursery: trio.Nursery, **options: Any) -> RunningProxy:
    proxy: RunningProxy = await nursery.start(serve_proxy, ProxyConfig(**options))
    return proxy


@dataclass
class RawReply:
    stream: trio.SocketStream
    head: bytes  # the reply head including the blank line
    reads: int  # receive_some calls it took to get the head

    @property
    def status(self) -> int:
        return int(self.head.split(b" ", 2)[1])


async def raw_connect(
    proxy: RunningProxy,
    target: str,
    headers: Sequence[str] = (),
    *,
    extra: bytes = b"",
    limit: float = 5.0,
) -> RawReply:
    """Send a CONNECT by hand and read the reply head byte-exactly."""
    stream = await trio.open_tcp_stream(proxy.host, proxy.port)
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}", *headers]
    await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode() + extra)
    buffer = b""
    reads = 0
    with trio.fail_after(limit):
        while b"\r\n\r\n" not in buffer:
            data = await stream.receive_some(65536)
            if not data:
                break
            reads += 1
            buffer += data
    return RawReply(stream, buffer, reads)


async def wait_until_idle(proxy: RunningProxy, limit: float = 5.0) -> None:
    """Wait (bounded) until the proxy has no open connection or tunnel."""
    for _ in range(int(limit / 0.01)):
        if not (proxy.stats.tunnels_open or proxy.stats.connections_open):
            return
        await trio.sleep(0.01)
    raise AssertionError(f"proxy still busy after {limit} s: {proxy.stats}")


async def run_curl(*args: str, limit: float = 15.0) -> subprocess.CompletedProcess[bytes]:
    curl = require_binary("curl")
    with trio.fail_after(limit):
        result: subprocess.CompletedProcess[bytes] = await trio.run_process(
            [curl, "-sS", "--max-time", "10", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return result
