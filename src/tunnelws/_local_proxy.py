"""``tunnelws local-proxy``: an HTTP proxy on this machine that needs nothing
from its clients and does, upstream, what the library does.

Any program that honours ``http_proxy``/``https_proxy`` gets tunnelws's route:
the proxy variables or an explicit proxy, PAC with failover, DIRECT for
no_proxy matches, Basic/Digest/NTLM/Negotiate to the upstream, https:// and
SOCKS upstreams. CONNECT requests become tunnels (:func:`open_route_stream`,
the library's own negotiation); absolute-form requests are forwarded by
:mod:`._http_forward`.

Safety: it accepts clients only from ``allow`` (loopback by default),
answers other addresses 403, never sends upstream credentials to a
destination reached directly and never logs them (log records and traces
carry redacted proxy URLs and the taxonomy's messages only). Each connection
holds at most a request head and one chunk per direction; heads, idle
tunnels and stuck peers time out; :meth:`LocalProxy.shutdown` stops
accepting and gives open connections a grace period.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import h11
import trio

from ._address import parse_host_port
from ._errors import (
    PhaseTimeoutError,
    ProxyConfigError,
    ProxyRefusedError,
    TunnelError,
)
from ._forward import TUNNEL_SCHEME, numbered_trace, peer_name
from ._http_forward import BadRequest, Forwarder, receive, send
from ._pipe import join
from ._route import is_loopback, resolve_proxy
from ._route_options import RouteOptions
from ._target import Target
from ._timeouts import PhaseClock
from ._transport import open_route_stream, prefixed

__all__ = [
    "DEFAULT_LISTEN",
    "LOOPBACK_NETWORKS",
    "LocalProxy",
    "LocalProxyOptions",
    "serve_local_proxy",
]

DEFAULT_LISTEN = ("127.0.0.1", 3128)
LOOPBACK_NETWORKS = ("127.0.0.0/8", "::1/128")
MAX_HEAD_BYTES = 64 * 1024

LogSink = Callable[[dict[str, Any]], None]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class LocalProxyOptions:
    """How the local proxy listens, whom it serves and how it reaches the world.

    ``listen``: ``(host, port)``, port 0 for any free one. ``route``: the
    upstream route (the library's :class:`RouteOptions`; its ``trace`` shows
    each upstream exchange, lines prefixed with the connection number).
    ``allow``: CIDRs of accepted client addresses. ``head_timeout``: seconds
    for a client to send its request head; ``idle_timeout``: seconds without
    a byte in either direction before a tunnel, a kept-alive connection or a
    stuck transfer is closed. ``max_connections``: beyond it, new clients
    wait in the listen queue. ``log``: called with one dict per connection
    when it ends (see docs/local-proxy.md for the fields).
    """

    listen: tuple[str, int] = DEFAULT_LISTEN
    route: RouteOptions = field(default_factory=RouteOptions)
    allow: tuple[str, ...] = LOOPBACK_NETWORKS
    head_timeout: float = 30.0
    idle_timeout: float = 300.0
    max_connections: int = 1024
    log: LogSink | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        self.networks()  # a bad CIDR is an error now, not at the first client
        if self.head_timeout <= 0 or self.idle_timeout <= 0:
            raise ValueError("head_timeout and idle_timeout must be positive")
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")

    def networks(self) -> tuple[Network, ...]:
        try:
            return tuple(ipaddress.ip_network(cidr.strip(), strict=False) for cidr in self.allow)
        except ValueError as exc:
            raise ValueError(f"invalid --allow network: {exc}") from None


class LocalProxy:
    """A running local proxy (what ``nursery.start(serve_local_proxy)`` returns)."""

    def __init__(self, address: tuple[str, int], options: LocalProxyOptions) -> None:
        self.address = address
        self.options = options
        self.connections_open = 0
        self.connections_total = 0
        self.refused = 0
        self.stopping = False
        self._accepting = trio.CancelScope()
        self._grace = 0.0
        self._stopped = trio.Event()
        self._drained = trio.Event()  # set when the last connection ends while stopping

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    async def shutdown(self, grace: float = 5.0) -> None:
        """Stop accepting; let open connections finish for up to ``grace``
        seconds, then close them; return when everything is closed."""
        self.stopping = True
        self._grace = grace
        self._accepting.cancel()
        await self._stopped.wait()


async def serve_local_proxy(
    options: LocalProxyOptions | None = None,
    *,
    task_status: trio.TaskStatus[LocalProxy] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the local proxy until cancelled or :meth:`LocalProxy.shutdown`.

    ``proxy = await nursery.start(serve_local_proxy, options)`` returns once
    it listens; ``proxy.address`` is the bound address, ``proxy.url`` the
    value for ``http_proxy``/``https_proxy``.
    """
    options = options or LocalProxyOptions()
    host, port = options.listen
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()
    server = LocalProxy((bound[0], bound[1]), options)
    try:
        _refuse_self_loop(server)
    except BaseException:
        for listener in listeners:
            await trio.aclose_forcefully(listener)
        raise
    handler = _Handler(server)
    try:
        async with trio.open_nursery() as connections:
            with server._accepting:
                async with trio.open_nursery() as acceptors:
                    for listener in listeners:
                        acceptors.start_soon(handler.accept_loop, listener, connections)
                    task_status.started(server)
            for listener in listeners:
                await listener.aclose()
            if server.connections_open:
                with trio.move_on_after(server._grace):
                    await server._drained.wait()
            connections.cancel_scope.cancel()
    finally:
        server._stopped.set()


def _refuse_self_loop(server: LocalProxy) -> None:
    """An upstream that is this very proxy (``https_proxy`` set to it in the
    shell that starts it) would send every request round in a loop."""
    route = server.options.route
    for url in ("https://tunnelws.invalid/", "http://tunnelws.invalid/"):
        proxy = resolve_proxy(url, route.proxy, env=route.env).proxy
        if proxy is not None and proxy.port == server.address[1] and is_loopback(proxy.host):
            raise ProxyConfigError(
                f"the upstream proxy {proxy.redacted()} is this local proxy itself; unset "
                "http_proxy/https_proxy where it runs, or pass --proxy/--no-proxy",
                source="proxy argument",
            )


class _Handler:
    def __init__(self, server: LocalProxy) -> None:
        self.server = server
        self.options = server.options
        self.networks = server.options.networks()
        self.numbers = itertools.count(1)
        self.slots = trio.Semaphore(server.options.max_connections)

    async def accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            await self.slots.acquire()
            try:
                stream = await listener.accept()
            except OSError:  # EMFILE and the like: wait for descriptors to free up
                self.slots.release()
                await trio.sleep(0.1)
                continue
            except BaseException:
                self.slots.release()
                raise
            nursery.start_soon(self.handle, stream)

    async def handle(self, stream: trio.SocketStream) -> None:
        server = self.server
        number = next(self.numbers)
        server.connections_open += 1
        server.connections_total += 1
        started = trio.current_time()
        record: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "id": number,
            "client": peer_name(stream),
        }
        try:
            if self._allowed(stream):
                await _Connection(self, stream, number, record).serve()
            else:
                server.refused += 1
                record.update(status=403, end="refused", error="not-allowed")
                await _send_error(
                    stream, None, 403, "not-allowed", "this address is not in --allow", 1.0
                )
        except Exception as exc:  # a bug must cost one connection, never the proxy
            record.update(end="error", error="internal", message=type(exc).__name__)
            trace = self.options.route.trace
            if trace:
                trace(f"[{number}] * internal error: {type(exc).__name__}")
        finally:
            await trio.aclose_forcefully(stream)
            self.slots.release()
            server.connections_open -= 1
            if server.stopping and not server.connections_open:
                server._drained.set()
            record["duration_s"] = round(trio.current_time() - started, 3)
            if self.options.log is not None:
                self.options.log(record)

    def _allowed(self, stream: trio.SocketStream) -> bool:
        try:
            host = stream.socket.getpeername()[0]
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except (OSError, ValueError):
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)


class _Connection:
    """One client connection: a CONNECT, or absolute-form requests kept alive."""

    def __init__(
        self, handler: _Handler, stream: trio.SocketStream, number: int, record: dict[str, Any]
    ) -> None:
        self.server = handler.server
        self.options = handler.options
        self.stream = stream
        self.record = record
        route = self.options.route
        self.route = (
            route
            if route.trace is None
            else replace(route, trace=numbered_trace(route.trace, number))
        )
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)

    def _trace(self, line: str) -> None:
        if self.route.trace:
            self.route.trace(line)

    async def serve(self) -> None:
        forwarder: Forwarder | None = None
        timeout = self.options.head_timeout
        requests = 0
        try:
            while True:
                try:
                    event = await receive(self.conn, self.stream, timeout, "the client")
                except PhaseTimeoutError:
                    if requests == 0:
                        self.record.update(end="idle-timeout", error="timeout")
                        await self._error(408, "timeout", "no complete request head in time")
                    return
                except h11.RemoteProtocolError as exc:  # 431 for an oversized head
                    await self._error(exc.error_status_hint, "bad-request", str(exc))
                    return
                except TunnelError:  # the client went away
                    return
                if not isinstance(event, h11.Request):
                    return  # ConnectionClosed between requests
                requests += 1
                method = event.method.decode("ascii")
                target = event.target.decode("ascii", "replace")
                self.record.update(method=method, target=target, requests=requests)
                self._trace(f"* {method} {target} from {self.record['client']}")
                if method == "CONNECT":
                    await self._tunnel(target)
                    return
                if forwarder is None:
                    forwarder = Forwarder(
                        self.stream, self.conn, self.route, timeout=self.options.idle_timeout
                    )
                keep = await self._forward(forwarder, event)
                if not keep or self.server.stopping:
                    return
                self.conn.start_next_cycle()
                timeout = self.options.idle_timeout
        finally:
            if forwarder is not None:
                self.record.update(
                    route=forwarder.route_label,
                    bytes_up=self.record.get("bytes_up", 0) + forwarder.bytes_up,
                    bytes_down=self.record.get("bytes_down", 0) + forwarder.bytes_down,
                )
                await forwarder.aclose()
            self.record.setdefault("end", "closed")

    async def _forward(self, forwarder: Forwarder, request: h11.Request) -> bool:
        try:
            keep = await forwarder.forward(request)
        except BadRequest as exc:
            await self._error(exc.status, "bad-request", str(exc))
            return False
        except TunnelError as exc:
            self.record["route"] = forwarder.route_label
            if self.conn.our_state is h11.SEND_RESPONSE:
                await self._failure(exc)
            else:  # the answer had started: all we can do is close
                self.record.update(end="broken", error=exc.category, message=str(exc))
            return False
        self.record["status"] = forwarder.status
        return keep

    async def _tunnel(self, authority: str) -> None:
        try:
            host, port = parse_host_port(authority)
        except ValueError as exc:
            await self._error(400, "bad-request", str(exc))
            return
        target = Target(TUNNEL_SCHEME, host, port, "/")
        try:
            self.record["route"] = str(
                resolve_proxy(target.url, self.route.proxy, env=self.route.env)
            )
            upstream = await open_route_stream(
                target, self.route, PhaseClock(self.route.connect_timeout)
            )
        except TunnelError as exc:
            await self._failure(exc)
            return
        try:
            await send(
                self.stream,
                self.conn.send(
                    h11.Response(status_code=200, headers=[], reason=b"Connection established")
                ),
                self.options.idle_timeout,
                "the client",
            )
        except TunnelError:
            await trio.aclose_forcefully(upstream)
            return
        self.record["status"] = 200
        client = prefixed(self.stream, self.conn.trailing_data[0])
        result = await join(client, upstream, idle_timeout=self.options.idle_timeout)
        self.record.update(bytes_up=result.a_to_b, bytes_down=result.b_to_a, end=result.end)
        if result.end == "broken":
            self.record["message"] = (
                f"{'client' if result.broken_side == 'a' else 'upstream'}: {result.reason}"
            )

    async def _failure(self, exc: TunnelError) -> None:
        status = 502
        if isinstance(exc, PhaseTimeoutError):
            status = 504
        elif isinstance(exc, ProxyRefusedError) and 400 <= exc.status <= 599:
            status = exc.status
        self.record.update(end="failed", error=exc.category, message=str(exc))
        self._trace(f"* {exc.category}: {exc}")
        await self._error(status, exc.category, str(exc))

    async def _error(self, status: int, category: str, message: str) -> None:
        self.record.setdefault("status", status)
        self.record.setdefault("error", category)
        self.record.setdefault("message", message)
        await _send_error(
            self.stream, self.conn, status, category, message, self.options.idle_timeout
        )


async def _send_error(
    stream: trio.abc.Stream,
    conn: h11.Connection | None,
    status: int,
    category: str,
    message: str,
    within: float,
) -> None:
    """A short text answer naming the taxonomy category; the connection is
    closed after it, so h11's state need not follow (written raw)."""
    if conn is not None and conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return  # an answer has begun: closing is all that is left
    body = f"tunnelws local-proxy: {category}: {message}\n".encode()
    reason = _REASONS.get(status, "Error")
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
        f"X-Tunnelws-Error: {category}\r\n\r\n"
    )
    with contextlib.suppress(TunnelError):
        await send(stream, head.encode("latin-1") + body, within, "the client")


_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    504: "Gateway Timeout",
}
