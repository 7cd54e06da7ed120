"""Local byte streams joined to tunnels along the route: standard input and
output (``tunnelws tunnel``, ssh's ProxyCommand) and a local listener
(``tunnelws forward``).

The route is the library's (:class:`RouteOptions`: proxy variables, PAC with
failover, no_proxy, every auth scheme, SOCKS); routing is decided as for an
``https://HOST:PORT`` URL, the convention for CONNECT tunnels.
"""

from __future__ import annotations

import itertools
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, replace

import trio

from ._errors import ConnectionLostError
from ._pipe import JoinResult, join
from ._route_options import RouteOptions
from ._target import Target, format_authority, normalize_host
from ._timeouts import PhaseClock
from ._trace import Trace
from ._transport import connect_origin, open_route_stream

__all__ = ["Forwarding", "open_destination", "serve_forward", "tunnel_stdio"]

#: The scheme whose proxy variables and no_proxy rules a raw tunnel follows.
TUNNEL_SCHEME = "https"


async def open_destination(
    host: str, port: int, route: RouteOptions | None = None, *, tls: bool = False
) -> trio.abc.Stream:
    """A byte stream to ``host:port`` along the route; with ``tls``, TLS to
    the destination inside it (verified, SNI ``host``)."""
    route = route or RouteOptions()
    target = Target(TUNNEL_SCHEME, normalize_host(host), port, "/")
    clock = PhaseClock(route.connect_timeout)
    if tls:
        return await connect_origin(target, route, clock)
    return await open_route_stream(target, route, clock)


async def tunnel_stdio(
    host: str,
    port: int,
    route: RouteOptions | None = None,
    *,
    tls: bool = False,
    stdin: trio.abc.ReceiveStream | None = None,
    stdout: trio.abc.SendStream | None = None,
) -> JoinResult:
    """Join standard input and output (or the given streams) to a tunnel to
    ``host:port``, byte for byte, until the far side closes.

    At EOF on stdin the tunnel is half-closed (ssh and most protocols then
    finish their side); when the far side closes, stdout is closed and this
    returns. Route failures raise the taxonomy's errors; a tunnel that breaks
    afterwards raises :class:`ConnectionLostError`.
    """
    remote = await open_destination(host, port, route, tls=tls)
    local = trio.StapledStream(
        stdout if stdout is not None else _stdio_stream(1),
        stdin if stdin is not None else _stdio_stream(0),
    )
    result = await join(local, remote, end_with_b=True)
    if result.end == "broken" and result.broken_side == "b":
        raise ConnectionLostError(
            f"the tunnel to {format_authority(normalize_host(host), port)} broke: {result.reason}"
        )
    return result


class _BlockingFileStream(trio.abc.Stream):
    """A regular file or device as a stream, read and written in a thread:
    the OS cannot poll those, so trio's FdStream does not take them."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await trio.to_thread.run_sync(os.read, self._fd, max_bytes or 65536)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            written = await trio.to_thread.run_sync(os.write, self._fd, view)
            view = view[written:]

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        await trio.lowlevel.checkpoint()


def _stdio_stream(fd: int) -> trio.abc.Stream:
    """A stream on a duplicate of ``fd`` (the original stays open for Python)."""
    mode = os.fstat(fd).st_mode
    duplicate = os.dup(fd)
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd):
        return trio.lowlevel.FdStream(duplicate)
    return _BlockingFileStream(duplicate)


@dataclass(frozen=True)
class Forwarding:
    """A running ``forward``: where it listens and where it tunnels to."""

    address: tuple[str, int]
    destination: tuple[str, int]


ForwardErrorHandler = Callable[[str, BaseException], None]


async def serve_forward(
    listen: tuple[str, int],
    destination: tuple[str, int],
    route: RouteOptions | None = None,
    *,
    idle_timeout: float | None = None,
    on_error: ForwardErrorHandler | None = None,
    task_status: trio.TaskStatus[Forwarding] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``listen`` (``(host, port)``, port 0 for any) and tunnel each
    accepted connection to ``destination`` along the route, concurrently.

    Start it with ``await nursery.start(serve_forward, ...)``, which returns a
    :class:`Forwarding` with the bound address. A connection whose tunnel
    cannot be opened is closed and reported to ``on_error(description,
    exception)``; the listener keeps going. Cancel the task to stop.
    """
    route = route or RouteOptions()
    host, port = destination
    host = normalize_host(host)
    where = format_authority(host, port)
    listeners = await trio.open_tcp_listeners(listen[1], host=listen[0])
    bound = listeners[0].socket.getsockname()
    numbers = itertools.count(1)

    async def handle(client: trio.SocketStream) -> None:
        number = next(numbers)
        peer = peer_name(client)
        options = (
            route
            if route.trace is None
            else replace(route, trace=numbered_trace(route.trace, number))
        )
        try:
            remote = await open_destination(host, port, options)
        except Exception as exc:  # every failure is this connection's, never the listener's
            if on_error is not None:
                on_error(f"connection {number} from {peer} to {where}", exc)
            await trio.aclose_forcefully(client)
            return
        await join(client, remote, idle_timeout=idle_timeout)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handle, listeners)
        task_status.started(Forwarding((bound[0], bound[1]), (host, port)))


def numbered_trace(trace: Trace, number: int) -> Trace:
    """Trace lines of one of many concurrent connections, marked with its number."""
    return lambda line: trace(f"[{number}] {line}")


def peer_name(stream: trio.SocketStream) -> str:
    try:
        address = stream.socket.getpeername()
    except OSError:
        return "?"
    return format_authority(address[0], address[1])
