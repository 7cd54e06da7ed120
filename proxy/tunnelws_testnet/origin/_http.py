"""One HTTP/1.1 server connection: h11 state over a trio stream, with limits.

Every read of a request is bounded by ``request_timeout`` (slow-loris clients
are dropped) and every write by ``send_timeout`` (a client that never reads
makes the write wait, never the server buffer, and is dropped in the end).
"""

from __future__ import annotations

import contextlib
import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import NoReturn

import h11
import trio

from tunnelws.streams import StreamIO

from ._config import OriginConfig

RECEIVE_SIZE = 65536
LINGER_SECONDS = 1.0
LINGER_MAX_BYTES = 64 * 1024 * 1024
logger = logging.getLogger("tunnelws_testnet.origin")


class ClientGone(Exception):
    """The client closed, broke the connection, or was too slow; stop serving it."""


class BodyTooLarge(ClientGone):
    """A request body over its limit was answered with 413."""


@dataclass(frozen=True)
class PeerInfo:
    """Transport facts about one connection, for ``/info``."""

    client: tuple[str, int]
    tls: bool
    tls_version: str | None = None
    cipher: str | None = None
    alpn: str | None = None


def describe_peer(stream: trio.abc.Stream) -> PeerInfo:
    """Read the client address and TLS parameters of a (possibly TLS) stream.

    Call after the TLS handshake (that is, after something was received).
    """
    transport = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    client: tuple[str, int] = ("", 0)
    if isinstance(transport, trio.SocketStream):
        address = transport.socket.getpeername()
        client = (str(address[0]), int(address[1]))
    if not isinstance(stream, trio.SSLStream):
        return PeerInfo(client=client, tls=False)
    try:
        cipher = stream.cipher()
        return PeerInfo(
            client=client,
            tls=True,
            tls_version=stream.version(),
            cipher=cipher[0] if cipher else None,
            alpn=stream.selected_alpn_protocol(),
        )
    except (ssl.SSLError, trio.NeedHandshakeError):
        return PeerInfo(client=client, tls=True)


class HTTPConnection:
    """Server side of one HTTP/1.1 connection (keep-alive, pipelining-safe)."""

    def __init__(self, stream: trio.abc.Stream, config: OriginConfig) -> None:
        self.stream = stream
        self._io = StreamIO(stream)  # descriptor I/O on plain TCP: fewer scheduler passes
        self.config = config
        self.h11 = h11.Connection(
            h11.SERVER, max_incomplete_event_size=config.max_header_size
        )
        self.request: h11.Request | None = None  # the one being answered

    async def send_raw(self, data: bytes) -> None:
        """Write bytes, waiting at most ``send_timeout`` for the client to take them."""
        if not data:
            return
        try:
            with trio.fail_after(self.config.send_timeout):
                await self._io.send_all(data)
        except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ClientGone(f"send failed: {exc!r}") from exc

    async def receive_raw(self) -> bytes:
        """Read some bytes (``b""`` at EOF); a broken connection raises ClientGone."""
        try:
            return bytes(await self._io.receive_some(RECEIVE_SIZE))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ClientGone(f"receive failed: {exc!r}") from exc

    async def send(self, *events: h11.Event) -> None:
        """Send ``events`` in one write (a response's head, body and end
        together: one wake-up of the peer, not one per event)."""
        await self.send_raw(b"".join(self.h11.send(event) or b"" for event in events))

    async def next_request(self) -> h11.Request | None:
        """Wait for the next request head (its body is read with
        :meth:`read_body` or :meth:`discard_body`).

        Returns ``None`` when the client is done (EOF or idle keep-alive
        timeout between requests). Protocol errors, timeouts in the middle of
        a head and oversized heads are answered here (400, 408, 431) and then
        end the connection via :class:`ClientGone`.
        """
        with trio.move_on_after(self.config.request_timeout):
            while True:
                event = await self._next_event()
                if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                    return None
                if isinstance(event, h11.Request):
                    # h11 bounds only incomplete heads; a complete one that
                    # arrived in a single read can be larger, so measure it.
                    if _head_size(event) > self.config.max_header_size:
                        await self.send_error(431, "request head too large")
                        raise ClientGone("request head too large")
                    self.request = event
                    return event
        if not self.h11.trailing_data[0]:
            return None  # idle keep-alive connection: close quietly
        await self.send_error(408, "request not received in time")
        raise ClientGone("request timeout")

    async def read_body(self, limit: int) -> bytes:
        """The current request's body, at most ``limit`` bytes (more: 413 and
        ClientGone). Bounded by ``request_timeout`` (408)."""
        declared = _content_length(self.request)
        if declared is not None and declared > limit:
            await self._refuse_body(limit)
        if self.h11.they_are_waiting_for_100_continue:
            await self.send(h11.InformationalResponse(status_code=100, headers=[]))
        body = bytearray()
        with trio.move_on_after(self.config.request_timeout):
            while True:
                event = await self._next_event()
                if isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > limit:
                        await self._refuse_body(limit)
                elif isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
                    return bytes(body)
                elif isinstance(event, h11.ConnectionClosed):
                    raise ClientGone("connection closed in the middle of a request body")
        await self.send_error(408, "request body not received in time")
        raise ClientGone("request body timeout")

    async def _refuse_body(self, limit: int) -> NoReturn:
        await self.send_error(413, f"request body larger than {limit} bytes")
        raise BodyTooLarge("request body too large")

    async def linger(self) -> None:
        """Read (and drop) what the client is still sending for a moment:
        closing with unread bytes would reset the connection and could
        destroy the answer before the client reads it."""
        with trio.move_on_after(LINGER_SECONDS):
            if isinstance(self.stream, trio.SocketStream):
                await self.stream.send_eof()
            drained = 0
            while drained < LINGER_MAX_BYTES and (data := await self.receive_raw()):
                drained += len(data)

    async def discard_body(self) -> None:
        """Read and drop the body of a request whose endpoint uses none
        (bounded like a head)."""
        await self.read_body(self.config.max_header_size)

    async def _next_event(self) -> h11.Event | type[h11.PAUSED]:
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                message = (
                    "request head too large" if status == 431 else f"malformed HTTP request: {exc}"
                )
                await self.send_error(status, message)
                raise ClientGone(message) from exc
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]
            self.h11.receive_data(await self.receive_raw())

    async def send_error(
        self, status: int, message: str, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        """Answer with a short plain-text explanation and close afterwards."""
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        extra = [(n, v) for n, v in headers if n.lower() != "connection"]
        connection = [v for n, v in headers if n.lower() == "connection"]
        await self.send_body(
            status,
            [*extra, ("Connection", ", ".join([*connection, "close"]))],
            (message + "\n").encode(),
            content_type="text/plain; charset=utf-8",
        )

    async def send_body(
        self,
        status: int,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        *,
        content_type: str,
        head_only: bool = False,
    ) -> None:
        """Send a complete response with a Content-Length body."""
        framing = [] if status == 204 else [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
        ]
        all_headers = [*framing, ("Cache-Control", "no-store"), *headers]
        data = [h11.Data(data=body)] if body and not head_only else []
        await self.send(response(status, all_headers), *data, h11.EndOfMessage())

    async def send_json(self, value: object, *, head_only: bool = False) -> None:
        body = json.dumps(value, indent=2).encode() + b"\n"
        await self.send_body(200, [], body, content_type="application/json", head_only=head_only)

    def start_next_cycle(self) -> bool:
        """Prepare for the next request; False when the connection must close."""
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            return True
        return False

    async def run_until_disconnect(self, producer: Callable[[], Awaitable[None]]) -> None:
        """Run ``producer`` but cancel it as soon as the client hangs up.

        For long-lived responses (SSE) that would otherwise only notice a
        vanished client on their next write. Whatever the client sends in the
        meantime is discarded, so the response must end the connection.
        """
        gone = False

        async with trio.open_nursery() as nursery:

            async def produce() -> None:
                nonlocal gone
                try:
                    await producer()
                except ClientGone:
                    gone = True
                nursery.cancel_scope.cancel()

            async def watch() -> None:
                nonlocal gone
                try:
                    while await self.receive_raw():
                        pass
                except ClientGone:
                    pass
                gone = True
                nursery.cancel_scope.cancel()

            nursery.start_soon(produce)
            nursery.start_soon(watch)
        if gone:
            raise ClientGone("client closed during a streamed response")


def _content_length(request: h11.Request | None) -> int | None:
    for name, value in request.headers if request is not None else ():
        if name == b"content-length" and value.isdigit():
            return int(value)
    return None


def _head_size(request: h11.Request) -> int:
    request_line = len(request.method) + len(request.target) + len(b"  HTTP/1.1\r\n")
    return request_line + sum(len(n) + len(v) + 4 for n, v in request.headers.raw_items())


def response(status: int, headers: Iterable[tuple[str, str]]) -> h11.Response:
    """An h11 response with the standard reason phrase."""
    return h11.Response(
        status_code=status,
        headers=[(name.encode("ascii"), value.encode("latin-1")) for name, value in headers],
        reason=HTTPStatus(status).phrase.encode("ascii"),
    )


Route = Callable[["HTTPConnection", h11.Request], Awaitable[bool]]


async def serve_http(stream: trio.abc.Stream, config: OriginConfig, route: Route) -> None:
    """Serve one connection: ``route`` answers each request (reading or
    discarding its body) and returns False when the connection must close."""
    http = HTTPConnection(stream, config)
    try:
        while True:
            request = await http.next_request()
            if request is None:
                return
            keep_alive = await route(http, request)
            if not keep_alive or not http.start_next_cycle():
                return
    except BodyTooLarge:
        with contextlib.suppress(ClientGone, trio.BrokenResourceError):
            await http.linger()
    except ClientGone as exc:
        logger.debug("connection ended: %s", exc)
    except trio.BrokenResourceError as exc:  # e.g. a failed TLS handshake
        logger.debug("connection broken: %r", exc)
    finally:
        await trio.aclose_forcefully(stream)
