"""Negotiate with real Kerberos: an MIT KDC (``tunnelws_testnet.kerberos``),
the companion proxy accepting tickets with a real keytab, and three
initiators: the tunnelws library, ``tunnelws connect`` and curl; squid's
Kerberos helper as a second, third-party acceptor.

The realm is session-scoped (starting it takes a fraction of a second, but
one realm is all the tests need); each test chooses its ticket cache
through the environment, as a user's ``kinit`` would.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trio

import tunnelws
from companion_support import (
    echo_through,
    run_curl,
    start_proxy,
    start_tcp_echo,
    wait_until_idle,
)
from conftest import IN_CI, require_binary
from peers import run_squid
from test_cli_connect import clean_env, run_cli
from test_companion_cli import cli_proxy
from tunnelws._auth import kerberos_available
from tunnelws_testnet.kerberos import KERBEROS_BINARIES, KerberosError, KerberosRealm

# The NTLM account of the proxy: a different name from the Kerberos user, so
# the log tells which mechanism authenticated.
NTLM_USER, NTLM_PASSWORD = "CORP\\bob", "ntlm-only-pw"
PRINCIPAL = "alice@TUNNELWS.TEST"
ALICE_PASSWORD = "alice-kerberos-pw"


def _require_module(name: str) -> None:
    try:
        importlib.import_module(name)
    except ImportError as exc:
        message = f"python module {name} missing ({exc}); install tunnelws[kerberos]"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def realm() -> Iterator[KerberosRealm]:
    for binary in KERBEROS_BINARIES:
        require_binary(binary)
    for module in ("gssapi", "krb5"):  # what pyspnego needs for Kerberos
        _require_module(module)
    with KerberosRealm(service_hosts=("localhost",), users={"alice": ALICE_PASSWORD}) as running:
        yield running


@pytest.fixture(scope="session")
def alice_ccache(realm: KerberosRealm) -> str:
    return realm.kinit("alice")


def use_client_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """This process and its children see ``env`` and no NTLM credential file
    or proxy bypass of the machine's."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("NTLM_USER_FILE", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def with_ticket(realm: KerberosRealm, alice_ccache: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The realm's configuration and alice's ticket cache."""
    use_client_env(monkeypatch, realm.client_env(alice_ccache))


@pytest.fixture
def without_ticket(realm: KerberosRealm, monkeypatch: pytest.MonkeyPatch) -> None:
    """The realm's configuration but an empty ticket cache."""
    use_client_env(monkeypatch, realm.client_env(None))


async def start_kerberos_proxy(
    nursery: trio.Nursery, realm: KerberosRealm
) -> tuple[Any, list[dict[str, Any]]]:
    """The companion offering Negotiate: Kerberos with the realm's keytab,
    NTLM (inside SPNEGO) for its one NTLM account."""
    records: list[dict[str, Any]] = []
    proxy = await start_proxy(
        nursery,
        auth=(NTLM_USER, NTLM_PASSWORD),
        auth_scheme="negotiate",
        keytab=realm.keytab,
        log=records.append,
    )
    return proxy, records


def kerberos_url(proxy: Any, userinfo: str = "") -> str:
    # Kerberos names the proxy by host name: HTTP/localhost is in the keytab.
    return f"http://{userinfo}localhost:{proxy.port}"


async def authenticated_as(proxy: Any, records: list[dict[str, Any]]) -> tuple[str, str]:
    """(user, mechanism) of the tunnel the proxy logged, once it is closed."""
    await wait_until_idle(proxy)
    tunnel = next(r for r in records if r["event"] == "tunnel")
    return tunnel["user"], tunnel["mechanism"]


async def test_tunnelws_authenticates_with_a_kerberos_ticket(
    nursery: trio.Nursery, realm: KerberosRealm, with_ticket: None
) -> None:
    echo_port = await start_tcp_echo(nursery)
    proxy, records = await start_kerberos_proxy(nursery, realm)
    trace: list[str] = []
    assert await echo_through(kerberos_url(proxy), echo_port, trace) == b"ping"
    assert await authenticated_as(proxy, records) == (PRINCIPAL, "kerberos")
    # One Negotiate token, and no NTLM message in it.
    assert [r["ntlm"] for r in records if r["event"] == "auth-message"] == [{"type": "not-ntlm"}]
    assert any("with Negotiate" in line for line in trace)
    # The service ticket came from the real KDC.
    assert f"{PRINCIPAL} for HTTP/localhost@TUNNELWS.TEST" in realm.log_path.read_text()


async def test_ntlm_still_works_through_the_kerberos_proxy_without_a_ticket(
    nursery: trio.Nursery, realm: KerberosRealm, without_ticket: None
) -> None:
    """The same proxy takes NTLM inside SPNEGO from a client with no ticket."""
    echo_port = await start_tcp_echo(nursery)
    proxy, records = await start_kerberos_proxy(nursery, realm)
    userinfo = f"{quote(NTLM_USER, safe='')}:{quote(NTLM_PASSWORD, safe='')}@"
    assert await echo_through(kerberos_url(proxy, userinfo), echo_port) == b"ping"
    assert await authenticated_as(proxy, records) == (NTLM_USER, "ntlm")


async def test_a_password_gets_a_kerberos_ticket_without_kinit(
    nursery: trio.Nursery, realm: KerberosRealm, without_ticket: None
) -> None:
    """User name and password, no ticket cache: pyspnego asks the KDC for a
    ticket itself (Negotiate only, so no Basic carries the password)."""
    echo_port = await start_tcp_echo(nursery)
    proxy, records = await start_kerberos_proxy(nursery, realm)
    url = kerberos_url(proxy, f"alice:{quote(ALICE_PASSWORD, safe='')}@")
    assert await echo_through(url, echo_port, proxy_auth_schemes=("Negotiate",)) == b"ping"
    assert await authenticated_as(proxy, records) == (PRINCIPAL, "kerberos")
    # One 407, to the bare first CONNECT: no Basic carried the password.
    assert [r["credentials"] for r in records if r["event"] == "auth-required"] == [False]


async def test_no_ticket_and_no_credentials_is_a_clear_proxy_auth_error(
    nursery: trio.Nursery, realm: KerberosRealm, without_ticket: None
) -> None:
    echo_port = await start_tcp_echo(nursery)
    proxy, records = await start_kerberos_proxy(nursery, realm)
    with pytest.raises(tunnelws.ProxyAuthError) as info:
        await echo_through(kerberos_url(proxy), echo_port)
    message = str(info.value)
    assert "no proxy credentials were given" in message
    assert "get a Kerberos ticket with kinit" in message
    assert "No Kerberos credentials available" in message  # GSSAPI's own reason
    assert "Negotiate not usable" in message
    assert info.value.schemes == ["Negotiate"]
    assert not any(r["event"] == "tunnel" for r in records)


def _udp_and_tcp_on_one_port() -> tuple[trio.socket.SocketType, trio.socket.SocketType, int]:
    """A UDP and a TCP socket bound to the same free loopback port (a KDC
    address serves both)."""
    for _ in range(20):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        port = int(udp.getsockname()[1])
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            tcp.bind(("127.0.0.1", port))
        except OSError:  # taken for TCP: try another
            udp.close()
            tcp.close()
            continue
        return trio.socket.from_stdlib_socket(udp), trio.socket.from_stdlib_socket(tcp), port
    raise AssertionError("no loopback port free for both UDP and TCP")


@asynccontextmanager
async def silent_kdc(
    realm: KerberosRealm, directory: Path
) -> AsyncIterator[tuple[Path, trio.Event]]:
    """A KDC address that takes requests and never answers (UDP and TCP), as
    behind a firewall that drops them: libkrb5 waits and retries for about
    half a minute. Yields a copy of the realm's krb5.conf naming it, and an
    event that a task of this event loop sets when the first request arrives."""
    udp, tcp, port = _udp_and_tcp_on_one_port()
    with udp, tcp:
        tcp.listen()  # connections wait in the backlog, unanswered
        conf = directory / "krb5-silent-kdc.conf"
        text = realm.krb5_conf.read_text()
        conf.write_text(re.sub(r"(?m)^(\s*kdc = ).*$", rf"\g<1>127.0.0.1:{port}", text))
        asked = trio.Event()

        async def first_request() -> None:
            await udp.recv(65536)
            asked.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(first_request)
            yield conf, asked
            nursery.cancel_scope.cancel()


async def test_a_silent_kdc_times_out_the_connect_and_the_loop_keeps_running(
    nursery: trio.Nursery, realm: KerberosRealm, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A password and no ticket: pyspnego asks the KDC for one, and the KDC
    is silent. The connect fails with the connect timeout (not libkrb5's
    half minute), and meanwhile the event loop runs: the KDC's request is
    read by a task of this loop, and a ticker keeps ticking after it (both
    would wait until libkrb5 gave up if GSSAPI ran on the loop)."""
    echo_port = await start_tcp_echo(nursery)
    proxy, records = await start_kerberos_proxy(nursery, realm)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.sleep(0.01)

    async with silent_kdc(realm, tmp_path) as (conf, asked):
        use_client_env(monkeypatch, {**realm.client_env(None), "KRB5_CONFIG": str(conf)})
        nursery.start_soon(ticker)
        ticks_when_asked = None

        async def note_request() -> None:
            nonlocal ticks_when_asked
            await asked.wait()
            ticks_when_asked = ticks

        nursery.start_soon(note_request)
        url = kerberos_url(proxy, f"alice:{quote(ALICE_PASSWORD, safe='')}@")
        with trio.fail_after(8), pytest.raises(tunnelws.PhaseTimeoutError) as info:
            await tunnelws.open_tunnel(
                "127.0.0.1",
                echo_port,
                proxy=url,
                proxy_auth_schemes=("Negotiate",),
                connect_timeout=1,
            )
    assert info.value.phase == "tunnel" and info.value.timeout == 1
    assert "Negotiate challenge (GSSAPI" in str(info.value)
    assert ALICE_PASSWORD not in str(info.value)
    assert ticks_when_asked is not None, "the KDC request was not read while connecting"
    assert ticks - ticks_when_asked >= 10  # the loop ran on while GSSAPI waited
    assert not any(r["event"] == "tunnel" for r in records)


async def test_a_thread_stuck_on_a_silent_kdc_does_not_keep_the_cli_alive(
    nursery: trio.Nursery, origin: Any, realm: KerberosRealm, tmp_path: Path
) -> None:
    """``tunnelws connect`` exits with the timeout's exit code while its
    GSSAPI thread is still waiting for the KDC."""
    proxy, _ = await start_kerberos_proxy(nursery, realm)
    async with silent_kdc(realm, tmp_path) as (conf, asked):
        env = clean_env(**{**realm.client_env(None), "KRB5_CONFIG": str(conf)})
        env["TUNNELWS_PROXY_PASSWORD"] = ALICE_PASSWORD
        with trio.fail_after(10):  # libkrb5 alone would wait about 30 s
            result = await run_cli(
                "connect",
                origin.ws_url(),
                *("--proxy", kerberos_url(proxy), "--proxy-user", "alice"),
                *("--proxy-auth-scheme", "negotiate", "--connect-timeout", "1"),
                env=env,
            )
        assert asked.is_set()
    assert result.returncode == tunnelws.PhaseTimeoutError.exit_code, result.stderr
    assert b"timed out after 1 s computing the answer" in result.stderr


def test_kerberos_available_reflects_the_ticket_cache(
    realm: KerberosRealm, alice_ccache: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_client_env(monkeypatch, realm.client_env(alice_ccache))
    assert kerberos_available(None, "localhost")
    # No HTTP/<name> principal for an address: the KDC refuses the ticket.
    assert not kerberos_available(None, "127.0.0.1")
    monkeypatch.setenv("KRB5CCNAME", realm.client_env(None)["KRB5CCNAME"])
    assert not kerberos_available(None, "localhost")


async def test_tunnelws_connect_with_proxy_auth_scheme_negotiate(
    nursery: trio.Nursery, origin: Any, realm: KerberosRealm, with_ticket: None
) -> None:
    proxy, records = await start_kerberos_proxy(nursery, realm)
    result = await run_cli(
        "connect",
        origin.ws_url(),
        "--proxy",
        kerberos_url(proxy),
        "--proxy-auth-scheme",
        "negotiate",
        stdin=b"one\ntwo\n",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines() == ["one", "two"]
    assert await authenticated_as(proxy, records) == (PRINCIPAL, "kerberos")


async def test_curl_proxy_negotiate_through_the_same_proxy(
    nursery: trio.Nursery, origin: Any, realm: KerberosRealm, with_ticket: None
) -> None:
    """curl's GSS-API initiator, an independent peer, passes the proxy too."""
    proxy, records = await start_kerberos_proxy(nursery, realm)
    result = await run_curl(
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--proxy-negotiate",
        "-U",
        ":",
        "-x",
        kerberos_url(proxy),
        "-p",
        f"http://127.0.0.1:{origin.http[1]}/info",
    )
    assert result.stdout == b"200", result.stderr
    assert await authenticated_as(proxy, records) == (PRINCIPAL, "kerberos")


async def test_companion_cli_takes_the_keytab_from_krb5_ktname(
    nursery: trio.Nursery, realm: KerberosRealm, with_ticket: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``tunnelws proxy --auth-scheme negotiate`` with the server's environment
    (how the harness runs it): Kerberos works with no keytab option."""
    for name, value in realm.server_env().items():
        monkeypatch.setenv(name, value)
    echo_port = await start_tcp_echo(nursery)
    account = f"{NTLM_USER}:{NTLM_PASSWORD}"
    async with cli_proxy("--auth", account, "--auth-scheme", "negotiate", "--log", "-") as (
        lines,
        process,
    ):
        port = lines[0].rsplit(":", 1)[1]
        assert await echo_through(f"http://localhost:{port}", echo_port) == b"ping"
        assert process.stdout is not None
        log = b""
        with trio.fail_after(5):
            while b'"event":"tunnel"' not in log:
                log += await process.stdout.receive_some(65536)
    tunnel = next(json.loads(line) for line in log.splitlines() if b'"tunnel"' in line)
    assert (tunnel["user"], tunnel["mechanism"]) == (PRINCIPAL, "kerberos")


async def test_tunnelws_and_squid_negotiate_kerberos(
    nursery: trio.Nursery, realm: KerberosRealm, with_ticket: None, tmp_path: Any
) -> None:
    """A third-party acceptor: squid's negotiate_kerberos_auth helper."""
    require_binary("squid")
    echo_port = await start_tcp_echo(nursery)
    with run_squid(tmp_path=tmp_path, allow_ports=None, negotiate_keytab=realm.keytab) as squid:
        trace: list[str] = []
        assert await echo_through(f"http://localhost:{squid.port}", echo_port, trace) == b"ping"
        assert any("with Negotiate" in line for line in trace)
        log = await squid.wait_for_access_log_async("TCP_TUNNEL/200")
    assert f"CONNECT 127.0.0.1:{echo_port} {PRINCIPAL} " in log


_WITHOUT_GSSAPI = """
import sys
sys.modules["gssapi"] = None  # any import of it now fails, as when not installed
sys.modules["krb5"] = None
from tunnelws.cli import main
sys.exit(main(sys.argv[1:]))
"""


async def test_without_gssapi_the_client_falls_back_to_ntlm(
    nursery: trio.Nursery, origin: Any, realm: KerberosRealm, with_ticket: None
) -> None:
    """A ticket is useless without python-gssapi; NTLM credentials still work."""
    proxy, records = await start_kerberos_proxy(nursery, realm)
    userinfo = f"{quote(NTLM_USER, safe='')}:{quote(NTLM_PASSWORD, safe='')}@"
    with trio.fail_after(30):
        result = await trio.run_process(
            [
                *(sys.executable, "-c", _WITHOUT_GSSAPI),
                *("connect", origin.ws_url(), "--proxy", kerberos_url(proxy, userinfo)),
            ],
            stdin=b"hello\n",
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hello\n"
    assert await authenticated_as(proxy, records) == (NTLM_USER, "ntlm")


def test_realm_life_cycle(tmp_path: Any) -> None:
    """kinit for a user of the realm's own, errors for one it lacks, and a
    stop that ends the KDC and removes the realm's directory."""
    klist = require_binary("klist")
    for binary in KERBEROS_BINARIES:
        require_binary(binary)
    realm = KerberosRealm(users={"carol": "carol-pw"})
    with realm:
        pid = realm.pid
        assert pid is not None
        ccache = realm.kinit("carol", f"FILE:{tmp_path / 'cc'}")
        listing = subprocess.run(
            [klist, "-c", ccache],
            capture_output=True,
            text=True,
            env={**os.environ, **realm.client_env(ccache)},
            timeout=10,
            check=True,
        )
        assert "Default principal: carol@TUNNELWS.TEST" in listing.stdout
        with pytest.raises(KerberosError, match="no user 'alice'"):
            realm.kinit("alice")
        assert "carol-pw" not in repr(realm)
        directory = realm.directory
    assert realm.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not directory.exists()
