"""Helpers for the fallback server tests: a raw HTTP/1.1 client (h11) that
shows statuses and bytes as sent, the protocol's events decoded with the
shared wire format, and a server running any fallback application."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import h11
import trio

from tunnelws._sse import EventStreamParser
from tunnelws.fallback import (
    Ack,
    End,
    FallbackMessage,
    Heartbeat,
    fallback_path,
)
from tunnelws.fallback import decode_down_event as _decode
from tunnelws_testnet.fallback import Application, FallbackConfig, run_fallback_server
from tunnelws_testnet.origin import OriginConfig
from tunnelws_testnet.origin._http import HTTPConnection, serve_http

DownEvent = FallbackMessage | Ack | Heartbeat | End


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def decode_events(body: bytes) -> list[DownEvent]:
    parser = EventStreamParser()
    decoded = [_decode(event, 1 << 24) for event in parser.feed(body)]
    return [event for event in decoded if event is not None]


def _request(
    method: str, target: str, body: bytes, headers: Sequence[tuple[str, str]]
) -> h11.Request:
    all_headers = [("Host", "fallback.test"), *headers]
    if method == "POST":
        all_headers.append(("Content-Length", str(len(body))))
    return h11.Request(method=method, target=target, headers=all_headers)


async def http_request(
    address: tuple[str, int],
    method: str,
    target: str,
    body: bytes | str | dict[str, Any] = b"",
    headers: Sequence[tuple[str, str]] = (),
    *,
    within: float = 10.0,
) -> Reply:
    """One request on a new connection; the whole response."""
    if isinstance(body, dict):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    with trio.fail_after(within):
        stream = await trio.open_tcp_stream(*address)
        async with stream:
            client = h11.Connection(h11.CLIENT)
            data = client.send(_request(method, target, body, headers))
            if body:
                data += client.send(h11.Data(data=body))
            data += client.send(h11.EndOfMessage())
            await stream.send_all(data)
            status, reply_headers, received = 0, {}, bytearray()
            while True:
                event = client.next_event()
                if event is h11.NEED_DATA:
                    client.receive_data(bytes(await stream.receive_some(65536)))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    reply_headers = {k.decode(): v.decode() for k, v in event.headers}
                elif isinstance(event, h11.Data):
                    received += event.data
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    return Reply(status, reply_headers, bytes(received))


@dataclass
class Stream:
    """A streamed downstream response, read as it arrives."""

    status: int
    headers: dict[str, str]
    events: list[tuple[float, DownEvent]] = field(default_factory=list)
    finished: bool = False


async def read_stream(
    address: tuple[str, int],
    target: str,
    headers: Sequence[tuple[str, str]] = (),
    *,
    until: Callable[[list[DownEvent]], bool] = lambda _: False,
    within: float = 10.0,
) -> Stream:
    """Read ``GET target`` until the response ends, or ``until(events)``."""
    parser = EventStreamParser()
    with trio.fail_after(within):
        stream = await trio.open_tcp_stream(*address)
        async with stream:
            client = h11.Connection(h11.CLIENT)
            await stream.send_all(
                client.send(_request("GET", target, b"", headers)) + client.send(h11.EndOfMessage())
            )
            result = Stream(0, {})
            while True:
                event = client.next_event()
                if event is h11.NEED_DATA:
                    client.receive_data(bytes(await stream.receive_some(65536)))
                elif isinstance(event, h11.Response):
                    result.status = event.status_code
                    result.headers = {k.decode(): v.decode() for k, v in event.headers}
                elif isinstance(event, h11.Data):
                    for sse in parser.feed(bytes(event.data)):
                        decoded = _decode(sse, 1 << 24)
                        if decoded is not None:
                            result.events.append((trio.current_time(), decoded))
                    if until([e for _, e in result.events]):
                        return result
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    result.finished = True
                    return result


class Client:
    """Drives one session by hand: open, up (with explicit seq), down."""

    def __init__(self, address: tuple[str, int], resource: str = "/echo") -> None:
        self.address = address
        self.resource = resource
        self.session = ""
        self.opened: dict[str, Any] = {}

    async def open(self, **body: Any) -> Reply:
        reply = await http_request(
            self.address, "POST", fallback_path(self.resource, "open"), {"version": 1, **body}
        )
        if reply.status == 201:
            self.opened = reply.json()
            self.session = self.opened["session"]
        return reply

    def path(self, endpoint: str) -> str:
        return fallback_path(self.resource, endpoint, self.session)  # type: ignore[arg-type]

    async def up(self, messages: list[dict[str, Any]], ack: int = 0) -> Reply:
        return await http_request(
            self.address, "POST", self.path("up"), {"ack": ack, "messages": messages}
        )

    async def poll(self, last: int = 0) -> Reply:
        target = self.path("down") + f"?mode=poll&last={last}"
        return await http_request(self.address, "GET", target)

    async def poll_events(self, last: int = 0) -> list[DownEvent]:
        reply = await self.poll(last)
        assert reply.status == 200, reply
        return decode_events(reply.body)


def text(seq: int, data: str) -> dict[str, Any]:
    return {"seq": seq, "type": "text", "data": data}


def messages_of(events: list[DownEvent]) -> list[FallbackMessage]:
    return [event for event in events if isinstance(event, FallbackMessage)]


@asynccontextmanager
async def serving_app(
    app: Application, config: FallbackConfig | None = None
) -> AsyncIterator[tuple[str, int]]:
    """A bare server whose every resource opens sessions with ``app``."""
    async with trio.open_nursery() as nursery:
        engine = await nursery.start(run_fallback_server, config or FallbackConfig())

        async def route(http: HTTPConnection, request: h11.Request) -> bool:
            handled = await engine.route(http, request, lambda _: app)
            assert handled is not None, "only fallback requests here"
            return handled

        async def handler(stream: trio.SocketStream) -> None:
            await serve_http(stream, OriginConfig(), route)

        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        await nursery.start(trio.serve_listeners, handler, listeners)
        port = listeners[0].socket.getsockname()[1]
        yield ("127.0.0.1", port)
        nursery.cancel_scope.cancel()
