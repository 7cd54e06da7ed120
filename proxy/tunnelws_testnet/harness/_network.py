"""One scenario's network, running: namespaces, firewall, origin and proxy.

:func:`scenario_network` is an async context manager: it builds the topology,
loads the firewall, starts the origin (and the proxy, if the scenario has one)
in their namespaces, waits until they listen, and hands back a
:class:`RunningNetwork` that knows the client's environment. On exit (also on
error, timeout or Ctrl-C) it kills exactly the processes it started and
deletes exactly its namespaces.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from urllib.parse import quote

import trio

from tunnelws_testnet.origin import LocalCA, make_test_ca

from ..kerberos import KerberosRealm
from ..peers import (
    CompanionProxy,
    Launch,
    Microsocks,
    Peer,
    Pproxy,
    Squid,
    Tinyproxy,
    listening,
)
from ._firewall import apply_ruleset
from ._netns import Topology, create_topology, install_system_ca
from ._scenarios import (
    CLIENT_ADDRESS,
    CLIENT_NETWORK,
    CORP_DOMAIN,
    DEAD_PROXY_PORT,
    KERBEROS_USER,
    ORIGIN_ADDRESS,
    ORIGIN_ADDRESS6,
    ORIGIN_NAME,
    PAC_PORT,
    PROXY_ADDRESS,
    PROXY_ENV_NAMES,
    PROXY_NAME,
    TRANSPARENT_PORT,
    PacDelivery,
    ProxyKind,
    ProxySpec,
    Scenario,
)

__all__ = [
    "ORIGIN_CERT_NAMES",
    "PROXY_CERT_NAMES",
    "PROXY_VARIABLES",
    "HarnessCA",
    "NetworkStartError",
    "RunningNetwork",
    "make_harness_ca",
    "pac_script",
    "read_text",
    "scenario_network",
    "spawn_in_namespace",
    "wait_for_line",
]

START_TIMEOUT = 20.0  # generous: a loaded 2-core machine starts a Python origin slowly
# The origin and https:// proxies have certificates of their own (one CA), for
# exactly their names: a client that checks one's certificate against the
# other's name (or against "localhost") fails.
ORIGIN_CERT_NAMES = (ORIGIN_NAME, ORIGIN_ADDRESS, ORIGIN_ADDRESS6)
PROXY_CERT_NAMES = (PROXY_NAME, PROXY_ADDRESS)
# Variables removed from the inherited environment before the scenario's own
# are set, so the machine's settings never leak into a scenario.
PROXY_VARIABLES = (
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "ftp_proxy",
    "ws_proxy",
    "wss_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "FTP_PROXY",
    "WS_PROXY",
    "WSS_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "CURL_CA_BUNDLE",
    # Kerberos: no ticket or realm of the machine's reaches a scenario.
    "KRB5_CONFIG",
    "KRB5CCNAME",
    "KRB5_KTNAME",
    "TUNNELWS_HARNESS_SECRETS",
)

_live_topologies: set[Topology] = set()


def _teardown_everything() -> None:
    # Last resort when the interpreter exits with scenarios still up.
    for topology in list(_live_topologies):
        topology.teardown()
        _live_topologies.discard(topology)


atexit.register(_teardown_everything)


def _wpad_hosts() -> list[tuple[str, str]]:
    # The namespaces share the machine's host name; in the client's hosts file
    # it becomes HOST.corp.test (socket.getfqdn() reads it there, no DNS), so
    # WPAD discovery asks for wpad.corp.test first, which is the router.
    hostname = socket.gethostname()
    short = hostname.split(".")[0]
    # "wpad" too: what DNS with the search domain corp.test answers for the
    # short name, which browsers' WPAD asks for (http://wpad/wpad.dat).
    return [
        (CLIENT_ADDRESS, f"{short}.{CORP_DOMAIN} {hostname}"),
        (PROXY_ADDRESS, f"wpad.{CORP_DOMAIN} wpad"),
    ]


def pac_script(proxy_port: int) -> str:
    """The PAC file of the pac-* scenarios: a dead proxy first, then the real one."""
    answer = f"PROXY {PROXY_ADDRESS}:{DEAD_PROXY_PORT}; PROXY {PROXY_ADDRESS}:{proxy_port}; DIRECT"
    return f'function FindProxyForURL(url, host) {{\n  return "{answer}";\n}}\n'


class NetworkStartError(RuntimeError):
    """The origin or the proxy did not come up; the message has its output."""


@dataclass(frozen=True)
class HarnessCA:
    """The CA of one harness run: the origin's certificate (``origin``) and
    the https:// proxies' (``proxy_cert``, ``proxy_key``), both issued by it."""

    origin: LocalCA
    proxy_cert: Path
    proxy_key: Path

    @property
    def ca_pem_path(self) -> Path:
        return self.origin.ca_pem_path


def make_harness_ca(directory: Path) -> HarnessCA:
    """A CA with one certificate for the origin and another for https:// proxies."""
    origin = make_test_ca(ORIGIN_CERT_NAMES, directory=directory, loopback=False)
    cert, key = origin.issue(list(PROXY_CERT_NAMES), "proxy")
    return HarnessCA(origin=origin, proxy_cert=cert, proxy_key=key)


@dataclass
class RunningNetwork:
    """What the runner needs to run a client in a built scenario."""

    scenario: Scenario
    topology: Topology
    directory: Path
    client_env: dict[str, str]
    secrets: list[str]
    origin_log: Path
    proxy: Launch | None  # the proxy's command, log and log parser
    outputs: dict[str, Path] = field(default_factory=dict)  # process name -> stdout file

    @property
    def proxy_log(self) -> Path | None:
        return None if self.proxy is None else self.proxy.log

    def masked_env(self, env: dict[str, str] | None = None) -> dict[str, str]:
        """The scenario's variables in ``env`` (default: the client's
        environment), not the inherited ones, secrets shown as ***."""
        shown = {}
        for key, value in (self.client_env if env is None else env).items():
            if key in PROXY_VARIABLES or key.startswith("TUNNELWS_"):
                for secret in self.secrets:
                    value = value.replace(quote(secret, safe=""), "***").replace(secret, "***")
                shown[key] = value
        return shown


@asynccontextmanager
async def scenario_network(
    scenario: Scenario, *, ca: HarnessCA, directory: Path, message: str
) -> AsyncIterator[RunningNetwork]:
    """Build and run ``scenario``'s network; tear it down on exit."""
    client_hosts = [(ORIGIN_ADDRESS, ORIGIN_NAME)] if scenario.client_knows_origin_name else []
    if scenario.pac is PacDelivery.WPAD:
        client_hosts += _wpad_hosts()
    if scenario.proxy_host == PROXY_NAME:
        client_hosts.append((PROXY_ADDRESS, PROXY_NAME))

    def build() -> Topology:
        directory.mkdir(parents=True, exist_ok=True)
        return create_topology(client_hosts=client_hosts)

    topology = await trio.to_thread.run_sync(build)
    _live_topologies.add(topology)
    processes: list[trio.Process] = []
    cleanups: list[Callable[[], None]] = []
    # Run before the namespaces go (the Kerberos realm stops its own KDC).
    stops: list[Callable[[], None]] = []
    try:
        await trio.to_thread.run_sync(apply_ruleset, topology.router, scenario.firewall)
        network = await _start_servers(
            scenario, topology, ca, directory, message, processes, cleanups, stops
        )
        yield network
    finally:
        with trio.CancelScope(shield=True):
            for stop in stops:
                await trio.to_thread.run_sync(stop)
            await trio.to_thread.run_sync(topology.teardown)
            _live_topologies.discard(topology)
            for process in processes:
                with trio.move_on_after(2):
                    await process.wait()
            for cleanup in cleanups:
                cleanup()


async def _start_servers(
    scenario: Scenario,
    topology: Topology,
    ca: HarnessCA,
    directory: Path,
    message: str,
    processes: list[trio.Process],
    cleanups: list[Callable[[], None]],
    stops: list[Callable[[], None]],
) -> RunningNetwork:
    secrets: list[str] = []
    spec = scenario.proxy
    for credentials in (scenario.url_credentials, spec.auth if spec else None):
        if credentials is not None:
            user, password = credentials
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            secrets += [password, token]
    origin_log = directory / "origin.jsonl"
    origin_log.touch()
    outputs = {"origin": directory / "origin.out"}
    origin_env = dict(os.environ, TUNNELWS_HARNESS_SECRETS="\n".join(secrets))
    origin = await spawn_in_namespace(
        topology,
        topology.origin,
        [
            sys.executable,
            "-m",
            "tunnelws_testnet.harness._origin_main",
            "--cert",
            str(ca.origin.cert_pem_path),
            "--key",
            str(ca.origin.key_pem_path),
            "--log",
            str(origin_log),
        ],
        outputs["origin"],
        processes,
        env=origin_env,
    )
    ca_file = ca.ca_pem_path
    # The servers start in parallel; their readiness is awaited afterwards, in turn.
    waits: list[Callable[[], Awaitable[None]]] = [
        partial(wait_for_line, origin, outputs["origin"], "ready", "origin")
    ]
    launch: Launch | None = None
    realm: KerberosRealm | None = None
    proxy_env: dict[str, str] | None = None
    if spec is not None and spec.kerberos:
        realm = await trio.to_thread.run_sync(_start_realm, topology, directory, stops)
        proxy_env = dict(os.environ, **realm.server_env())
    if spec is not None:
        peer = _peer(spec, ca, directory)
        port = spec.port if scenario.configure_proxy else TRANSPARENT_PORT
        launch = peer.launch(directory, PROXY_ADDRESS, port)
        cleanups.append(launch.finish)
        outputs["proxy"] = launch.output
        proxy = await spawn_in_namespace(
            topology,
            topology.router,
            launch.argv,
            launch.output,
            processes,
            env=proxy_env,
            stop_signal=launch.stop_signal,
        )
        ready = partial(launch.ready, proxy.pid)
        waits.append(partial(_wait_until, proxy, ready, launch.name, launch.output))
        trusted = spec.client_trusts_intercept_ca or spec.intercept_ca_in_system_store
        if trusted and isinstance(peer, CompanionProxy) and peer.intercept_ca is not None:
            ca_file = peer.intercept_ca
    pac_url: str | None = None
    if scenario.pac is not None and spec is not None:
        pac_dir = directory / "pac"
        pac_dir.mkdir(exist_ok=True)
        for name in ("proxy.pac", "wpad.dat"):
            (pac_dir / name).write_text(pac_script(spec.port))
        if scenario.pac is PacDelivery.FILE:
            pac_url = f"pac+file://{pac_dir / 'proxy.pac'}"
        else:
            pac_port = 80 if scenario.pac is PacDelivery.WPAD else PAC_PORT
            pac_url = (
                "pac+wpad:"
                if scenario.pac is PacDelivery.WPAD
                else f"pac+http://{PROXY_ADDRESS}:{PAC_PORT}/proxy.pac"
            )
            outputs["pac-server"] = directory / "pac-server.out"
            server = await spawn_in_namespace(
                topology,
                topology.router,
                [
                    sys.executable,
                    "-m",
                    "http.server",
                    str(pac_port),
                    "--bind",
                    PROXY_ADDRESS,
                    "--directory",
                    str(pac_dir),
                ],
                outputs["pac-server"],
                processes,
            )
            waits.append(
                partial(
                    _wait_until,
                    server,
                    partial(listening, server.pid, PROXY_ADDRESS, pac_port),
                    "PAC HTTP server",
                    outputs["pac-server"],
                )
            )
    for wait in waits:
        await wait()
    system_ca = spec is not None and spec.intercept_ca_in_system_store
    if system_ca:
        # The companion wrote its CA while starting; `ip netns exec` mounts
        # the copy of /etc/ssl holding it over the client's /etc/ssl.
        await trio.to_thread.run_sync(install_system_ca, topology.client, ca_file)
    extra: dict[str, str] = {}
    if realm is not None:
        # The user's own kinit, in the client's namespace, before the client starts.
        prefix = ("ip", "netns", "exec", topology.client)
        ccache = await trio.to_thread.run_sync(partial(realm.kinit, KERBEROS_USER, prefix=prefix))
        extra = realm.client_env(ccache)
    client_env = _client_env(scenario, None if system_ca else ca_file, message, pac_url=pac_url)
    return RunningNetwork(
        scenario=scenario,
        topology=topology,
        directory=directory,
        client_env={**client_env, **extra},
        secrets=secrets,
        origin_log=origin_log,
        proxy=launch,
        outputs=outputs,
    )


def _start_realm(
    topology: Topology, directory: Path, stops: list[Callable[[], None]]
) -> KerberosRealm:
    """A Kerberos realm whose KDC runs on the router (port 88), with a key
    for HTTP/proxy.corp.test; it stops (its log kept) before the teardown."""
    realm = KerberosRealm(
        host=PROXY_ADDRESS,
        port=88,
        service_hosts=(PROXY_NAME,),
        kdc_prefix=("ip", "netns", "exec", topology.router),
    )

    def stop() -> None:
        # The log shows which tickets the KDC issued; the rest (keys) goes.
        with contextlib.suppress(OSError):
            shutil.copyfile(realm.log_path, directory / "kdc.log")
        realm.stop()

    stops.append(stop)
    realm.start()
    if realm.pid is not None:
        topology.pids.append(realm.pid)
    return realm


def _proxy_url(scenario: Scenario) -> str:
    assert scenario.proxy is not None
    userinfo = ""
    if scenario.url_credentials is not None:
        user, password = scenario.url_credentials
        userinfo = f"{quote(user, safe='')}:{quote(password, safe='')}@"
    host = scenario.proxy_host
    return f"{scenario.proxy.client_scheme}://{userinfo}{host}:{scenario.proxy.port}"


def _client_env(
    scenario: Scenario, ca_file: Path | None, message: str, *, pac_url: str | None = None
) -> dict[str, str]:
    """The client's environment; no CA variables when ``ca_file`` is None
    (the CA is then in the namespace's system store)."""
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARIABLES}
    env.update(
        TUNNELWS_URL=scenario.url,
        TUNNELWS_MESSAGE=message,
        TUNNELWS_CONNECT_TIMEOUT=f"{scenario.connect_timeout:g}",
    )
    if ca_file is not None:
        env.update(
            SSL_CERT_FILE=str(ca_file),
            REQUESTS_CA_BUNDLE=str(ca_file),
            NODE_EXTRA_CA_CERTS=str(ca_file),
        )
    if scenario.message_repeat != 1:
        env["TUNNELWS_MESSAGE_REPEAT"] = str(scenario.message_repeat)
    if scenario.idle is not None:
        env["TUNNELWS_IDLE"] = f"{scenario.idle:g}"
    if scenario.proxy is not None and scenario.configure_proxy:
        url = pac_url if pac_url is not None else _proxy_url(scenario)
        env.update(dict.fromkeys(PROXY_ENV_NAMES[scenario.proxy_env], url))
        if scenario.no_proxy is not None:
            env["no_proxy"] = env["NO_PROXY"] = scenario.no_proxy
    return env


async def spawn_in_namespace(
    topology: Topology,
    netns: str,
    argv: Sequence[str],
    output: Path,
    processes: list[trio.Process],
    *,
    env: dict[str, str] | None = None,
    stop_signal: signal.Signals = signal.SIGTERM,
) -> trio.Process:
    with output.open("wb") as out:
        process = await trio.lowlevel.open_process(
            ["ip", "netns", "exec", netns, *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    # `ip netns exec` execs the command, so this PID is the server itself.
    topology.pids.append(process.pid)
    if stop_signal is not signal.SIGTERM:
        topology.stop_signals[process.pid] = stop_signal
    processes.append(process)
    return process


def read_text(path: Path | None) -> str:
    """A log or output file's text; empty when there is none (yet)."""
    if path is None:
        return ""
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _tail(path: Path, limit: int = 2000) -> str:
    return read_text(path)[-limit:]


async def _wait_until(
    process: trio.Process, ready: Callable[[], bool], what: str, output: Path
) -> None:
    with trio.move_on_after(START_TIMEOUT):
        while not ready():
            if process.poll() is not None:
                raise NetworkStartError(
                    f"{what} exited with status {process.returncode}:\n{_tail(output)}"
                )
            await trio.sleep(0.02)
        return
    raise NetworkStartError(f"{what} not ready after {START_TIMEOUT} s:\n{_tail(output)}")


async def wait_for_line(process: trio.Process, output: Path, needle: str, what: str) -> None:
    await _wait_until(process, lambda: needle in _tail(output, 100_000), what, output)


def _peer(spec: ProxySpec, ca: HarnessCA, directory: Path) -> Peer:
    """The proxy of a scenario, on the router, for the client network."""
    if spec.kind is ProxyKind.COMPANION:
        return CompanionProxy(
            options=spec.options,
            tls=(ca.proxy_cert, ca.proxy_key) if spec.tls else None,
            intercept_ca_dir=directory / "intercept-ca" if spec.intercept else None,
            onward_ca=ca.ca_pem_path if spec.intercept else None,
        )
    if spec.kind is ProxyKind.SQUID:
        return Squid(clients=CLIENT_NETWORK)  # squid's stock policy: CONNECT only to 443
    if spec.kind is ProxyKind.TINYPROXY:
        return Tinyproxy(clients=CLIENT_NETWORK)
    if spec.kind is ProxyKind.MICROSOCKS:
        return Microsocks(auth=spec.auth)
    if spec.kind is ProxyKind.SOCKS5:
        return Pproxy(scheme="socks5", auth=spec.auth)
    return Pproxy(auth=spec.auth)
