"""Network namespaces for one scenario: create, wire with veth pairs, tear down.

Three namespaces per scenario::

    client (up0 10.77.1.2) <-> (cli0 10.77.1.1) router (org0 10.77.2.1) <-> (up0 10.77.2.2) origin

The router is the firewall and the proxy host. Nothing is connected to the
namespace the harness runs in, so no packet can leave the sandbox.

Names are ``tws-<harness pid>-<n>-<role>``; teardown kills the processes in
exactly those namespaces (by PID) and deletes exactly those names, so a
crashed run can be cleaned up by ``tunnelws harness cleanup`` and concurrent
runs never touch each other.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..peers import alive
from ._scenarios import (
    CLIENT_ADDRESS,
    CLIENT_ADDRESS6,
    ORIGIN_ADDRESS,
    ORIGIN_ADDRESS6,
    ORIGIN_NAME,
    PROXY_ADDRESS,
    PROXY_ADDRESS6,
    ROUTER_ORIGIN_SIDE,
    ROUTER_ORIGIN_SIDE6,
)

__all__ = [
    "NAME_PREFIX",
    "NetnsError",
    "Topology",
    "cleanup_stale",
    "create_topology",
    "install_system_ca",
    "kill_pids",
    "netns_pids",
]

NAME_PREFIX = "tws-"
NETNS_ETC = Path("/etc/netns")
SYSTEM_SSL = Path("/etc/ssl")
# The system bundle (OpenSSL's default cafile /usr/lib/ssl/cert.pem links here,
# and truststore reads it on Debian-like systems).
SYSTEM_BUNDLE = Path("certs/ca-certificates.crt")
_COMMAND_TIMEOUT = 10.0
_counter = itertools.count(1)


class NetnsError(RuntimeError):
    """An ``ip`` command failed while building the topology."""


def _ip(*args: str) -> None:
    result = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=_COMMAND_TIMEOUT, check=False
    )
    if result.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {result.stderr.strip()}")


@dataclass(eq=False)  # identity semantics: topologies live in a set
class Topology:
    """The three namespaces of one scenario and the processes started in them."""

    client: str
    router: str
    origin: str
    pids: list[int] = field(default_factory=list)
    # A process's own stop signal when it is not SIGTERM (squid: SIGINT).
    stop_signals: dict[int, signal.Signals] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, str, str]:
        return (self.client, self.router, self.origin)

    def teardown(self) -> None:
        """Kill every process in our namespaces, then delete them. Idempotent."""
        kill_pids(
            [*self.pids, *(p for name in self.names for p in netns_pids(name))],
            signals=self.stop_signals,
        )
        self.pids.clear()
        self.stop_signals.clear()
        for name in self.names:
            _delete_netns(name)


def create_topology(*, client_hosts: Sequence[tuple[str, str]] = ()) -> Topology:
    """Build client, router and origin namespaces joined by two veth pairs.

    The client gets no DNS server except the router's port 53 (where the
    firewall counts and rejects queries) and an ``/etc/hosts`` with only
    ``client_hosts``; the router resolves :data:`ORIGIN_NAME` through its own
    ``/etc/hosts``. On failure everything created so far is removed.
    """
    base = f"{NAME_PREFIX}{os.getpid()}-{next(_counter)}"
    topology = Topology(client=f"{base}-c", router=f"{base}-r", origin=f"{base}-o")
    try:
        _build(topology, client_hosts)
    except BaseException:
        topology.teardown()
        raise
    return topology


def _build(topology: Topology, client_hosts: Sequence[tuple[str, str]]) -> None:
    client, router, origin = topology.names
    localhost = [("127.0.0.1", "localhost"), ("::1", "localhost")]
    # `ip netns exec` bind-mounts /etc/netns/NAME/* over /etc/*.
    _write_etc(client, hosts=[*localhost, *client_hosts], nameserver=PROXY_ADDRESS)
    _write_etc(router, hosts=[*localhost, (ORIGIN_ADDRESS, ORIGIN_NAME)], nameserver="127.0.0.1")
    _write_etc(origin, hosts=localhost, nameserver="127.0.0.1")
    for name in topology.names:
        _ip("netns", "add", name)
        _ip("-n", name, "link", "set", "lo", "up")
    # Both veth ends are created inside the namespaces, never in ours.
    _ip("-n", router, "link", "add", "cli0", "type", "veth", "peer", "name", "up0", "netns", client)
    _ip("-n", router, "link", "add", "org0", "type", "veth", "peer", "name", "up0", "netns", origin)
    links = (
        (client, "up0", CLIENT_ADDRESS, CLIENT_ADDRESS6),
        (router, "cli0", PROXY_ADDRESS, PROXY_ADDRESS6),
        (router, "org0", ROUTER_ORIGIN_SIDE, ROUTER_ORIGIN_SIDE6),
        (origin, "up0", ORIGIN_ADDRESS, ORIGIN_ADDRESS6),
    )
    for name, device, address, address6 in links:
        _ip("-n", name, "addr", "add", f"{address}/24", "dev", device)
        # nodad: the address is usable at once (no 1-2 s duplicate detection).
        _ip("-n", name, "-6", "addr", "add", f"{address6}/64", "dev", device, "nodad")
        # The link-local address made at link up skips it too: its detection
        # ending a second later is an address change, which chromium reports
        # to a WebSocket opening then as ERR_NETWORK_CHANGED.
        _ip("netns", "exec", name, "sysctl", "-qw", f"net.ipv6.conf.{device}.accept_dad=0")
        _ip("-n", name, "link", "set", device, "up")
    for name, gateway, gateway6 in (
        (client, PROXY_ADDRESS, PROXY_ADDRESS6),
        (origin, ROUTER_ORIGIN_SIDE, ROUTER_ORIGIN_SIDE6),
    ):
        _ip("-n", name, "route", "add", "default", "via", gateway)
        _ip("-n", name, "-6", "route", "add", "default", "via", gateway6)
    for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"):
        _ip("netns", "exec", router, "sysctl", "-qw", f"{key}=1")


def _write_etc(name: str, *, hosts: Sequence[tuple[str, str]], nameserver: str) -> None:
    directory = NETNS_ETC / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "hosts").write_text("".join(f"{a}\t{h}\n" for a, h in hosts))
    (directory / "resolv.conf").write_text(
        f"nameserver {nameserver}\noptions timeout:1 attempts:1\n"
    )


def install_system_ca(name: str, ca_pem: Path) -> None:
    """Add ``ca_pem`` to the system trust store as seen inside namespace ``name``.

    ``ip netns exec`` bind-mounts every entry of ``/etc/netns/NAME/`` over
    ``/etc/``, so a copy of ``/etc/ssl`` there, with the CA appended to its
    bundle, is the store of every process started in ``name`` (OpenSSL's
    ``/usr/lib/ssl/{certs,cert.pem}`` point into ``/etc/ssl``). The machine's
    own store is untouched; teardown removes the copy with ``/etc/netns/NAME``.
    """
    target = NETNS_ETC / name / "ssl"
    # private/ holds keys that no client needs.
    shutil.copytree(SYSTEM_SSL, target, symlinks=True, ignore=shutil.ignore_patterns("private"))
    bundle = target / SYSTEM_BUNDLE
    existing = bundle.read_bytes() if bundle.exists() else b""
    bundle.unlink(missing_ok=True)  # it may be a symlink into the real store
    separator = b"" if not existing or existing.endswith(b"\n") else b"\n"
    bundle.write_bytes(existing + separator + ca_pem.read_bytes())


def netns_pids(name: str) -> list[int]:
    """PIDs of the processes running in namespace ``name`` (none if it is gone)."""
    result = subprocess.run(
        ["ip", "netns", "pids", name],
        capture_output=True,
        text=True,
        timeout=_COMMAND_TIMEOUT,
        check=False,
    )
    return [int(line) for line in result.stdout.split() if line.isdigit()]


def kill_pids(
    pids: Sequence[int], grace: float = 2.0, *, signals: Mapping[int, signal.Signals] | None = None
) -> None:
    """SIGTERM (or the PID's own stop signal from ``signals``), then SIGKILL
    after ``grace`` seconds, exactly these PIDs."""
    pids = sorted(set(pids))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, (signals or {}).get(pid, signal.SIGTERM))
    deadline = time.monotonic() + grace
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _delete_netns(name: str) -> None:
    if (Path("/run/netns") / name).exists():
        subprocess.run(
            ["ip", "netns", "del", name], capture_output=True, timeout=_COMMAND_TIMEOUT, check=False
        )
    shutil.rmtree(NETNS_ETC / name, ignore_errors=True)


def _owner_alive(name: str) -> bool:
    """Whether the harness process named in ``tws-<pid>-...`` still runs."""
    pid_text = name[len(NAME_PREFIX) :].split("-", 1)[0]
    return pid_text.isdigit() and alive(int(pid_text))


def cleanup_stale(*, include_live: bool = False) -> list[str]:
    """Delete ``tws-*`` namespaces left by crashed runs; return their names.

    Namespaces whose harness process still runs are kept unless
    ``include_live`` is set.
    """
    names: set[str] = set()
    run_netns = Path("/run/netns")
    if run_netns.is_dir():
        names |= {p.name for p in run_netns.iterdir() if p.name.startswith(NAME_PREFIX)}
    if NETNS_ETC.is_dir():
        names |= {p.name for p in NETNS_ETC.iterdir() if p.name.startswith(NAME_PREFIX)}
    removed = []
    for name in sorted(names):
        if not include_live and _owner_alive(name):
            continue
        kill_pids(netns_pids(name))
        _delete_netns(name)
        removed.append(name)
    return removed
