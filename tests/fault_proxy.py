"""A forwarding HTTP proxy that misbehaves at the byte level, for the
fallback's tests: the misbehaviours that make the fallback necessary or hard,
on demand and seeded (a failure can be replayed).

It never does CONNECT (405: a forward-only proxy) and always drops
``Upgrade`` from the requests it forwards, as squid and filtering proxies do.
``buffer`` holds each whole response back until it ends (as scanning proxies
do: a streamed response arrives in one piece at its end); ``reset_chance``
resets that share of the responses in the middle of the body (after half of
a buffered body, after the first piece of a streamed one). With ``origin``
set it is a *transparent* proxy: the client connects to it as if it were
the origin (origin-form requests), and ``pass_101`` forwards upgrades but
relays nothing after the ``101`` (a WebSocket that opens and stays mute).

Only what the tests need: one request at a time per client connection, a
new origin connection per request, bodies up to ``MAX_BODY``.
"""

from __future__ import annotations

import random
import socket
import struct
from dataclasses import dataclass, field
from urllib.parse import urlsplit

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
    host: str
    port: int
    buffer: bool = True
    reset_chance: float = 0.0
    origin: tuple[str, int] | None = None
    pass_101: bool = False
    seed: int = 1
    responses: int = 0
    resets: int = 0
    connects_refused: int = 0
    targets: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


async def serve_fault_proxy(
    *,
    buffer: bool = True,
    reset_chance: float = 0.0,
    origin: tuple[str, int] | None = None,
    pass_101: bool = False,
    seed: int = 1,
    task_status: trio.TaskStatus[FaultProxy] = trio.TASK_STATUS_IGNORED,
) -> None:
    rng = random.Random(seed)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    proxy = FaultProxy("127.0.0.1", port, buffer, reset_chance, origin, pass_101, seed)

    async def handle(client: trio.SocketStream) -> None:
        try:
            await _serve_client(proxy, rng, client)
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


async def _serve_client(proxy: FaultProxy, rng: random.Random, client: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER)
    while True:
        request = await _read_event(conn, client)
        if not isinstance(request, h11.Request):
            return
        body = await _read_body(conn, client)
        if request.method == b"CONNECT":
            proxy.connects_refused += 1
            await _answer(conn, client, 405, b"this proxy does not do CONNECT")
        elif not await _forward(proxy, rng, conn, client, request, body):
            return
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return
        conn.start_next_cycle()


async def _answer(conn: h11.Connection, client: trio.abc.Stream, status: int, body: bytes) -> None:
    headers = [("Content-Length", str(len(body)))]
    await client.send_all(
        conn.send(h11.Response(status_code=status, headers=headers))
        + conn.send(h11.Data(data=body))
        + conn.send(h11.EndOfMessage())
    )


async def _forward(
    proxy: FaultProxy,
    rng: random.Random,
    conn: h11.Connection,
    client: trio.SocketStream,
    request: h11.Request,
    body: bytes,
) -> bool:
    """Forward one request; False when the client connection is done."""
    target = request.target.decode("ascii")
    if proxy.origin is not None:
        host, port, path = proxy.origin[0], proxy.origin[1], target
    else:
        parts = urlsplit(target)
        if parts.scheme != "http" or not parts.hostname:
            await _answer(conn, client, 400, b"absolute http:// URLs only")
            return True
        host, port = parts.hostname, parts.port or 80
        path = parts.path + (f"?{parts.query}" if parts.query else "")
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
        proxy.responses += 1
        reset = rng.random() < proxy.reset_chance
        kept = [(k, v) for k, v in response.headers.raw_items() if k.lower() not in _HOP_BY_HOP]
        if proxy.buffer:
            content = await _read_body(upstream, origin)
            kept.append((b"Content-Length", str(len(content)).encode()))
            data = conn.send(h11.Response(status_code=response.status_code, headers=kept))
            data += conn.send(h11.Data(data=content))
            if reset:
                await client.send_all(data[: len(data) - len(content) // 2])
                return _reset(proxy, client)
            await client.send_all(data + conn.send(h11.EndOfMessage()))
            return True
        await client.send_all(
            conn.send(h11.Response(status_code=response.status_code, headers=kept))
        )
        while True:
            event = await _read_event(upstream, origin)
            if isinstance(event, h11.Data):
                await client.send_all(conn.send(event))
                if reset:
                    return _reset(proxy, client)
            elif isinstance(event, h11.EndOfMessage):
                await client.send_all(conn.send(event))
                return True


def _reset(proxy: FaultProxy, stream: trio.SocketStream) -> bool:
    # SO_LINGER 0: closing sends a RST, as a proxy killing the request does.
    proxy.resets += 1
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    stream.socket.close()
    return False
