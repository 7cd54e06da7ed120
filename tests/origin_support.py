"""Helpers for the origin server tests: a running server and raw HTTP clients.

Raw sockets are used where the test must see bytes exactly as sent (status
lines, chunk boundaries, arrival times); real clients are used elsewhere.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import trio

from tunnelws_testnet.origin import (
    LocalCA,
    OriginAddresses,
    OriginConfig,
    make_test_ca,
    serve_origin,
)


@pytest.fixture(scope="session")
def origin_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return make_test_ca(directory=tmp_path_factory.mktemp("origin-ca"))


@asynccontextmanager
async def running_origin(
    ca: LocalCA | None = None, **options: Any
) -> AsyncIterator[OriginAddresses]:
    """Run an origin server (with a TLS port when ``ca`` is given) for a block."""
    if ca is not None:
        options.setdefault("tls_port", 0)
        options.setdefault("ssl_context", ca.server_context())
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(serve_origin, OriginConfig(**options))
        yield addresses
        nursery.cancel_scope.cancel()


async def raw_exchange(address: tuple[str, int], data: bytes, within: float = 5.0) -> bytes:
    """Send ``data``, then read until the server closes (at most ``within`` seconds)."""
    with trio.fail_after(within):
        stream = await trio.open_tcp_stream(*address)
        async with stream:
            await stream.send_all(data)
            received = bytearray()
            while chunk := await stream.receive_some(65536):
                received += chunk
            return bytes(received)


def status_of(response: bytes) -> int:
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", response)
    assert match, f"not an HTTP response: {response[:80]!r}"
    return int(match.group(1))


def get_request(path: str, *headers: str, host: str = "origin.test") -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", *headers, "", ""]
    return "\r\n".join(lines).encode()


@dataclass
class ArrivedChunk:
    at: float  # trio.current_time() when the chunk arrived
    data: bytes


class ChunkedReader:
    """Reads a chunked HTTP response incrementally, timestamping each chunk."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError("server closed the connection")
        self.buffer += data

    async def read_head(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            await self._fill()
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        self.buffer = bytearray(rest)
        return head

    async def read_chunk(self) -> ArrivedChunk:
        """The next chunk's payload (``b""`` for the terminating chunk)."""
        while b"\r\n" not in self.buffer:
            await self._fill()
        size_line, _, rest = bytes(self.buffer).partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        self.buffer = bytearray(rest)
        while len(self.buffer) < size + 2:
            await self._fill()
        payload = bytes(self.buffer[:size])
        assert self.buffer[size : size + 2] == b"\r\n"
        del self.buffer[: size + 2]
        return ArrivedChunk(trio.current_time(), payload)


@asynccontextmanager
async def sse_stream(
    address: tuple[str, int], path: str, *headers: str
) -> AsyncIterator[tuple[bytes, ChunkedReader]]:
    """GET an SSE path; yields the response head and a chunk reader."""
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        await stream.send_all(get_request(path, *headers))
        reader = ChunkedReader(stream)
        head = await reader.read_head()
        yield head, reader


def parse_event_block(block: bytes) -> dict[str, str]:
    """Fields of one SSE event block (test server output is simple: one of each)."""
    fields: dict[str, str] = {}
    for line in block.decode().strip("\n").split("\n"):
        name, _, value = line.partition(": ")
        fields[name] = value
    return fields
