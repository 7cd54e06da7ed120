"""Helpers for the tunnel / forward / local-proxy tests: starting the local
proxy in-process, raw clients that check bytes exactly, payloads."""

from __future__ import annotations

import hashlib
import os
import socket
from typing import Any

import trio

from tunnelws import RouteOptions
from tunnelws._local_proxy import LocalProxy, LocalProxyOptions, serve_local_proxy

__all__ = [
    "dead_port",
    "digest",
    "echo_through",
    "payload",
    "raw_connect_via",
    "read_head",
    "start_local_proxy",
]


async def start_local_proxy(
    nursery: trio.Nursery, route: RouteOptions | None = None, **options: Any
) -> LocalProxy:
    options.setdefault("listen", ("127.0.0.1", 0))
    proxy: LocalProxy = await nursery.start(
        serve_local_proxy, LocalProxyOptions(route=route or RouteOptions(), **options)
    )
    return proxy


def payload(size: int) -> bytes:
    return os.urandom(size)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dead_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def read_head(stream: trio.abc.Stream, limit: float = 10.0) -> tuple[bytes, bytes]:
    """Read an HTTP head; returns (head, bytes after it)."""
    buffer = b""
    with trio.fail_after(limit):
        while b"\r\n\r\n" not in buffer:
            data = await stream.receive_some(65536)
            if not data:
                break
            buffer += data
    head, _, rest = buffer.partition(b"\r\n\r\n")
    return head, rest


async def raw_connect_via(
    proxy_url: str, target: str, *, local_address: str | None = None
) -> tuple[trio.SocketStream, bytes, bytes]:
    """CONNECT ``target`` through the HTTP proxy at ``proxy_url`` by hand."""
    host, port = proxy_url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port), local_address=local_address)
    await stream.send_all(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head, rest = await read_head(stream)
    return stream, head, rest


async def echo_through(stream: trio.abc.Stream, data: bytes, limit: float = 60.0) -> bytes:
    """Send ``data`` (then half-close) while reading the echo to EOF."""
    received = bytearray()

    async def sender() -> None:
        view = memoryview(data)
        for start in range(0, len(data), 65536):
            await stream.send_all(view[start : start + 65536])
        await stream.send_eof()  # type: ignore[attr-defined]

    with trio.fail_after(limit):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            while chunk := await stream.receive_some(65536):
                received += chunk
    return bytes(received)
