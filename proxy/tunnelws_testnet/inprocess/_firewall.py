"""A firewall inside one trio run: which connections and name lookups the
client side of a test may make.

trio lets a run replace how sockets are made and how names are resolved
(:func:`trio.socket.set_custom_socket_factory`,
:func:`trio.socket.set_custom_hostname_resolver`; both are per run). The
:class:`Firewall` installs both: connects go through its policy (allowed
addresses pass, the rest are refused or silently swallowed), name lookups are
answered from a small host table or fail like an absent DNS server, and every
attempt is recorded in :class:`Observations` for assertions.

The test network's own servers (origin, proxy) live in the same process and
must reach the outside freely: a task started through :func:`network_side`
(and every task it spawns, since trio tasks inherit context variables) is on
the network side of the firewall and is never filtered.
"""

from __future__ import annotations

import contextvars
import errno
import ipaddress
import os
import socket as stdlib_socket
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import trio
import trio.lowlevel
import trio.socket

# trio has no public way to wrap one method of a socket (its SocketType is an
# empty marker class); subclassing the concrete class keeps every other
# method exactly as trio implements it.
from trio._socket import _SocketType

__all__ = [
    "ConnectAttempt",
    "Egress",
    "Firewall",
    "Lookup",
    "Observations",
    "network_side",
    "on_network_side",
]

#: What happens to a client connect that is not explicitly allowed:
#: ``open`` lets it through, ``reject`` refuses it at once (a TCP reset,
#: ``ECONNREFUSED``), ``blackhole`` never answers (the client's timeout ends it).
Egress = Literal["open", "reject", "blackhole"]

_NETWORK_SIDE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "tunnelws_network_side", default=False
)


async def network_side(
    async_fn: Callable[..., Awaitable[Any]],
    *args: Any,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``async_fn(*args, task_status=...)`` on the network side of every
    firewall: its connects and lookups, and those of all tasks it spawns,
    are not filtered. Use it to start servers::

        proxy = await nursery.start(network_side, serve_proxy, ProxyConfig())
    """
    _NETWORK_SIDE.set(True)  # this task's own context copy only
    await async_fn(*args, task_status=task_status)


def on_network_side() -> bool:
    """Whether the current task was started through :func:`network_side`."""
    return _NETWORK_SIDE.get()


@dataclass(frozen=True)
class ConnectAttempt:
    """One client-side connect: where to, and what the firewall did."""

    host: str
    port: int
    verdict: Literal["allowed", "open", "rejected", "blackholed"]

    @property
    def blocked(self) -> bool:
        return self.verdict in ("rejected", "blackholed")


@dataclass(frozen=True)
class Lookup:
    """One client-side name lookup and whether it was answered."""

    host: str
    answered: bool


@dataclass
class Observations:
    """What the client side tried, in order."""

    connects: list[ConnectAttempt] = field(default_factory=list)
    lookups: list[Lookup] = field(default_factory=list)

    def direct_connects(self) -> list[ConnectAttempt]:
        """Connects to anything but the explicitly reachable addresses (the proxy)."""
        return [attempt for attempt in self.connects if attempt.verdict != "allowed"]

    def looked_up(self, host: str) -> bool:
        """Whether the client tried to resolve ``host`` (case-insensitive)."""
        wanted = host.lower().rstrip(".")
        return any(lookup.host == wanted for lookup in self.lookups)


def _address_key(host: str, port: int) -> tuple[str, int]:
    try:
        return str(ipaddress.ip_address(host.split("%", 1)[0])), port
    except ValueError:
        return host.lower(), port


class Firewall:
    """The client side's network policy for one trio run.

    ``reachable``: ``(ip, port)`` pairs the client may always connect to (the
    proxy). ``egress``: what happens to every other connect.
    ``client_hosts``: the client's whole DNS (name -> IP); other names fail
    with ``gaierror`` (``EAI_NONAME``), as with no DNS server.
    ``network_hosts``: names the network side (the proxy) resolves without
    asking the system (e.g. ``origin.test``); other names use the system
    resolver. IP literals never reach a resolver (trio answers them itself).

    Use :meth:`installed` (or :meth:`install`/:meth:`uninstall`) inside
    ``trio.run``; the settings are per run.
    """

    def __init__(
        self,
        *,
        egress: Egress = "reject",
        reachable: Iterable[tuple[str, int]] = (),
        client_hosts: Mapping[str, str] | None = None,
        network_hosts: Mapping[str, str] | None = None,
    ) -> None:
        self.egress: Egress = egress
        self.reachable: set[tuple[str, int]] = {_address_key(h, p) for h, p in reachable}
        self.client_hosts = {k.lower(): v for k, v in (client_hosts or {}).items()}
        self.network_hosts = {k.lower(): v for k, v in (network_hosts or {}).items()}
        self.observations = Observations()
        # What install() replaced, put back by uninstall().
        self._previous: tuple[trio.abc.SocketFactory | None, trio.abc.HostnameResolver | None] = (
            None,
            None,
        )
        self._installed = False

    def __repr__(self) -> str:
        return (
            f"Firewall(egress={self.egress!r}, reachable={sorted(self.reachable)!r}, "
            f"client_hosts={self.client_hosts!r})"
        )

    def allow(self, host: str, port: int) -> None:
        """Make ``(host, port)`` reachable for the client (e.g. a proxy started later)."""
        self.reachable.add(_address_key(host, port))

    # -- installation -------------------------------------------------------

    def install(self) -> None:
        """Filter this trio run's sockets and lookups (until :meth:`uninstall`)."""
        if self._installed:
            raise RuntimeError("this firewall is already installed")
        factory = trio.socket.set_custom_socket_factory(_SocketFactory(self))
        resolver = trio.socket.set_custom_hostname_resolver(_Resolver(self))
        self._previous = (factory, resolver)
        self._installed = True

    @contextmanager
    def installed(self) -> Iterator[Firewall]:
        """``with firewall.installed():`` filter for the block's duration."""
        self.install()
        try:
            yield self
        finally:
            self.uninstall()

    def uninstall(self) -> None:
        """Restore the socket factory and resolver that were there before."""
        if not self._installed:
            return
        factory, resolver = self._previous
        trio.socket.set_custom_socket_factory(factory)
        trio.socket.set_custom_hostname_resolver(resolver)
        self._installed = False

    # -- policy -------------------------------------------------------------

    async def check_connect(self, host: str, port: int) -> None:
        """Apply the policy to a client connect to the numeric ``(host, port)``."""
        key = _address_key(host, port)
        if key in self.reachable:
            self.observations.connects.append(ConnectAttempt(key[0], port, "allowed"))
            return
        if self.egress == "open":
            self.observations.connects.append(ConnectAttempt(key[0], port, "open"))
            return
        if self.egress == "reject":
            self.observations.connects.append(ConnectAttempt(key[0], port, "rejected"))
            await trio.lowlevel.checkpoint()
            raise ConnectionRefusedError(errno.ECONNREFUSED, os.strerror(errno.ECONNREFUSED))
        self.observations.connects.append(ConnectAttempt(key[0], port, "blackholed"))
        await trio.sleep_forever()

    def answer(self, host: str) -> str | None:
        """The client-side answer for ``host`` (recorded), or None: no such name."""
        name = host.lower().rstrip(".")
        address = self.client_hosts.get(name)
        self.observations.lookups.append(Lookup(name, address is not None))
        return address


class _FilteredSocket(_SocketType):
    def __init__(self, sock: stdlib_socket.socket, firewall: Firewall) -> None:
        super().__init__(sock)
        self._firewall = firewall

    async def connect(self, address: Any) -> None:
        if on_network_side() or self.family not in (stdlib_socket.AF_INET, stdlib_socket.AF_INET6):
            await super().connect(address)
            return
        host, port = address[0], address[1]
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            # A name passed straight to connect(): resolve it through the
            # (filtered) resolver first, as the kernel cannot.
            infos = await trio.socket.getaddrinfo(host, port, self.family, self.type)
            address = infos[0][4]
            host = str(address[0])
        await self._firewall.check_connect(host, port)
        await super().connect(address)


class _SocketFactory(trio.abc.SocketFactory):
    def __init__(self, firewall: Firewall) -> None:
        self._firewall = firewall

    def socket(
        self,
        family: stdlib_socket.AddressFamily | int = stdlib_socket.AF_INET,
        type: stdlib_socket.SocketKind | int = stdlib_socket.SOCK_STREAM,
        proto: int = 0,
    ) -> trio.socket.SocketType:
        return _FilteredSocket(stdlib_socket.socket(family, type, proto), self._firewall)


class _Resolver(trio.abc.HostnameResolver):
    def __init__(self, firewall: Firewall) -> None:
        self._firewall = firewall

    async def getaddrinfo(
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> Any:
        name = host.decode("ascii") if host is not None else None
        if name is not None and on_network_side():
            address = self._firewall.network_hosts.get(name.lower().rstrip("."))
            if address is None:
                return await trio.to_thread.run_sync(
                    stdlib_socket.getaddrinfo,
                    host,
                    port,
                    family,
                    type,
                    proto,
                    flags,
                    abandon_on_cancel=True,
                )
            name = address
        elif name is not None:
            address = self._firewall.answer(name)
            await trio.lowlevel.checkpoint()
            if address is None:
                raise stdlib_socket.gaierror(stdlib_socket.EAI_NONAME, "Name or service not known")
            name = address
        # A numeric answer: the stdlib call cannot block.
        return stdlib_socket.getaddrinfo(
            name, port, family, type, proto, flags | stdlib_socket.AI_NUMERICHOST
        )

    async def getnameinfo(
        self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int
    ) -> tuple[str, str]:
        return await trio.to_thread.run_sync(
            stdlib_socket.getnameinfo, sockaddr, flags, abandon_on_cancel=True
        )
