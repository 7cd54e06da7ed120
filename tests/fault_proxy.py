"""A transparent filter in front of one origin, misbehaving at the byte
level where the companion proxy cannot (it forwards transparent requests to
the ``Host`` header's origin, which a test cannot point elsewhere): the
client connects to it as if it were the origin.

It drops ``Upgrade`` from the requests it forwards, as filtering proxies do
(the WebSocket handshake then fails while plain requests pass), or, with
``pass_101``, forwards the upgrade and relays nothing after the ``101`` (a
WebSocket that opens and stays mute). ``buffer`` holds each whole response
back until it ends, as scanning proxies do.

Only what the tests need: one request at a time per client connection, a
new origin connection per request, bodies up to ``MAX_BODY``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import h11
import trio

__all__ = ["FaultProxy", "serve_fault_proxy"]

MAX_BODY = 32 * 1024 * 1024
_HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"proxy-authorization",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
    b"content-length",
}


@dataclass
class FaultProxy:
    port: int
    origin: tuple[str, int]
    buffer: bool = False
    pass_101: bool = False
    targets: list[str] = field(default_factory=list)

    def ws_url(self, path: str = "/echo") -> str:
        """The URL a client uses: this filter in the origin's place."""
        return f"ws://127.0.0.1:{self.port}{path}"


async def serve_fault_proxy(
    origin: tuple[str, int],
    *,
    buffer: bool = False,
    pass_101: bool = False,
    task_status: trio.TaskStatus[FaultProxy] = trio.TASK_STATUS_IGNORED,
) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    proxy = FaultProxy(listeners[0].socket.getsockname()[1], origin, buffer, pass_101)

    async def handle(client: trio.SocketStream) -> None:
        try:
            await _serve_client(proxy, client)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError, OSError):
            pass
        finally:
            await trio.aclose_forcefully(client)

    task_status.started(proxy)
    await trio.serve_listeners(handle, listeners)


async def _read_event(conn: h11.Connection, stream: trio.abc.Stream) -> h11.Event:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(65536)))
            continue
        if event is h11.PAUSED:
            raise h11.RemoteProtocolError("paused")
        assert isinstance(event, h11.Event)
        return event


async def _read_body(conn: h11.Connection, stream: trio.abc.Stream) -> bytes:
    body = bytearray()
    while True:
        event = await _read_event(conn, stream)
        if isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise h11.RemoteProtocolError("body too large")
        elif isinstance(event, h11.EndOfMessage):
            return bytes(body)
        else:
            raise h11.RemoteProtocolError(f"unexpected {event!r}")


async def _serve_client(proxy: FaultProxy, client: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER)
    while True:
        request = await _read_event(conn, client)
        if not isinstance(request, h11.Request):
            return
        body = await _read_body(conn, client)
        await _forward(proxy, conn, client, request, body)
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return
        conn.start_next_cycle()


async def _forward(
    proxy: FaultProxy,
    conn: h11.Connection,
    client: trio.SocketStream,
    request: h11.Request,
    body: bytes,
) -> None:
    host, port = proxy.origin
    path = request.target.decode("ascii")
    proxy.targets.append(path)
    upgrade = proxy.pass_101 and any(
        k.lower() == b"upgrade" for k, _ in request.headers.raw_items()
    )
    headers = [(k, v) for k, v in request.headers.raw_items() if k.lower() not in _HOP_BY_HOP]
    if upgrade:
        headers += [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")]
    else:
        headers += [(b"Content-Length", str(len(body)).encode()), (b"Connection", b"close")]
    origin = await trio.open_tcp_stream(host, port)
    async with origin:
        upstream = h11.Connection(h11.CLIENT)
        data = upstream.send(h11.Request(method=request.method, target=path, headers=headers))
        if not upgrade:
            data += upstream.send(h11.Data(data=body)) + upstream.send(h11.EndOfMessage())
        await origin.send_all(data)
        response = await _read_event(upstream, origin)
        if isinstance(response, h11.InformationalResponse) and response.status_code == 101:
            head = b"HTTP/1.1 101 Switching Protocols\r\n" + b"".join(
                k + b": " + v + b"\r\n" for k, v in response.headers.raw_items()
            )
            await client.send_all(head + b"\r\n")
            await trio.sleep_forever()  # and relay nothing
        assert isinstance(response, h11.Response), response
        kept = [(k, v) for k, v in response.headers.raw_items() if k.lower() not in _HOP_BY_HOP]
        if proxy.buffer:
            content = await _read_body(upstream, origin)
            kept.append((b"Content-Length", str(len(content)).encode()))
            await client.send_all(
                conn.send(h11.Response(status_code=response.status_code, headers=kept))
                + conn.send(h11.Data(data=content))
                + conn.send(h11.EndOfMessage())
            )
            return
        await client.send_all(
            conn.send(h11.Response(status_code=response.status_code, headers=kept))
        )
        while True:
            event = await _read_event(upstream, origin)
            await client.send_all(conn.send(event))
            if isinstance(event, h11.EndOfMessage):
                return
