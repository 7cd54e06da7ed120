"""The client against real third-party proxies: pproxy, squid, tinyproxy.

These are the peers users actually meet; each test states the behaviour of
that proxy it relies on (recorded in docs/testing.md).
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from conftest import skip_or_fail
from peers import run_pproxy, run_squid, run_tinyproxy
from tunnelws import ProxyAuthError, ProxyRefusedError, open_websocket
from tunnelws_testnet.peers import ProxyProcess

USER, PASSWORD = "alice", "p@ss:w/rd%"
ENCODED_PASSWORD = "p%40ss%3Aw%2Frd%25"
# squid's digest_file_auth reads "user:password" lines: no colon possible.
DIGEST_PASSWORD = "d1gest@s/cret%"


async def echo(url: str, **kwargs: object) -> str | bytes:
    async with open_websocket(url, **kwargs) as ws:  # type: ignore[arg-type]
        await ws.send("through a real proxy")
        return await ws.receive()


def with_credentials(
    proxy: ProxyProcess, user: str = USER, password: str = ENCODED_PASSWORD
) -> str:
    return f"http://{user}:{password}@{proxy.host}:{proxy.port}"


@pytest.fixture(scope="module")
def pproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    with run_pproxy(auth=(USER, PASSWORD), tmp_path=tmp_path_factory.mktemp("pproxy")) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def squid_digest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    # allow_ports=None: any port, so the origin's ephemeral ports work.
    with run_squid(
        tmp_path=tmp_path_factory.mktemp("squid-digest"),
        allow_ports=None,
        digest_auth=(USER, DIGEST_PASSWORD),
    ) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def squid_default(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    with run_squid(tmp_path=tmp_path_factory.mktemp("squid-default")) as proxy:
        yield proxy


# -- pproxy: Basic, checked on every connection, 407 then close -----------------


@pytest.mark.parametrize("secure", [False, True])
async def test_pproxy_basic_auth_ws_and_wss(origin, test_ca, pproxy, secure) -> None:
    url = origin.wss_url() if secure else origin.ws_url()
    reply = await echo(url, proxy=with_credentials(pproxy), ssl_context=test_ca.client_context())
    assert reply == "through a real proxy"
    port = (origin.https if secure else origin.http)[1]
    await pproxy.wait_for_access_log_async(f"127.0.0.1:{port}")


async def test_pproxy_without_credentials_is_proxy_auth(origin, pproxy) -> None:
    with pytest.raises(ProxyAuthError) as info:
        await echo(origin.ws_url(), proxy=pproxy.url)
    assert info.value.schemes == ["Basic"]
    assert info.value.exit_code == 6


async def test_pproxy_wrong_password_is_proxy_auth_without_leaking(origin, pproxy) -> None:
    with pytest.raises(ProxyAuthError) as info:
        await echo(origin.ws_url(), proxy=pproxy.url, proxy_auth=(USER, "wrong-secret"))
    assert "wrong-secret" not in str(info.value)
    assert "rejected" in str(info.value)


# -- squid: Digest on a kept-alive connection, 443-only default policy --------------


async def test_squid_digest_on_the_same_connection(origin, squid_digest) -> None:
    trace: list[str] = []
    reply = await echo(
        origin.ws_url(),
        proxy=squid_digest.url,
        proxy_auth=(USER, DIGEST_PASSWORD),
        trace=trace.append,
    )
    assert reply == "through a real proxy"
    text = "\n".join(trace)
    # Basic went first (preemptive), squid asked for Digest and kept the
    # connection: exactly one TCP connection to the proxy, two CONNECTs.
    assert text.count("* Connecting to proxy") == 1
    assert text.count("> CONNECT ") == 2
    assert "Proxy-Authorization: Digest ***" in text
    assert DIGEST_PASSWORD not in text
    # The 407 is logged at once, the tunnel (with the user) when it has closed.
    log = await squid_digest.wait_for_access_log_async(
        f"CONNECT 127.0.0.1:{origin.http[1]} {USER} "
    )
    assert DIGEST_PASSWORD not in log


async def test_squid_digest_wrong_password(origin, squid_digest) -> None:
    with pytest.raises(ProxyAuthError) as info:
        await echo(origin.ws_url(), proxy=squid_digest.url, proxy_auth=(USER, "nope"))
    assert "Digest" in info.value.schemes


async def test_squid_refuses_non_443_connect_naming_403(origin, squid_default) -> None:
    with pytest.raises(ProxyRefusedError) as info:
        await echo(origin.ws_url(), proxy=squid_default.url, fallback="never")
    assert info.value.status == 403
    assert "403" in str(info.value) and "443" in str(info.value)
    assert dict(info.value.headers).get("X-Squid-Error", "").startswith("ERR_ACCESS_DENIED")


async def test_squid_refusal_is_exit_7_from_the_cli(origin, squid_default) -> None:
    result = await trio.run_process(
        [
            sys.executable,
            "-m",
            "tunnelws",
            "connect",
            origin.ws_url(),
            "--proxy",
            squid_default.url,
            "--fallback",
            "never",
        ],
        stdin=b"x\n",
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 7
    assert b"403" in result.stderr


def port_443_free() -> bool:
    with socket.socket() as sock:
        # As trio's listeners do, so connections in TIME_WAIT do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", 443))
        except OSError:
            return False
    return True


async def test_squid_allows_wss_on_443(nursery, test_ca, squid_default) -> None:
    from tunnelws_testnet.origin import OriginConfig, serve_origin

    if not port_443_free():
        skip_or_fail("port 443 is not available to bind on this machine")
    origin443 = await nursery.start(
        serve_origin, OriginConfig(tls_port=443, ssl_context=test_ca.server_context())
    )
    reply = await echo(
        origin443.wss_url(), proxy=squid_default.url, ssl_context=test_ca.client_context()
    )
    assert reply == "through a real proxy"


# -- tinyproxy: HTTP/1.0 200 ------------------------------------------------------


async def test_tinyproxy_http10_reply(origin, tmp_path: Path) -> None:
    with run_tinyproxy(tmp_path=tmp_path) as proxy:
        trace: list[str] = []
        assert await echo(origin.ws_url(), proxy=proxy.url, trace=trace.append) == (
            "through a real proxy"
        )
    assert "< HTTP/1.0 200 Connection established" in trace


async def test_tinyproxy_basic_auth(origin, tmp_path: Path) -> None:
    with run_tinyproxy(tmp_path=tmp_path, basic_auth=("bob", "tiny-secret")) as proxy:
        reply = await echo(origin.ws_url(), proxy=proxy.url, proxy_auth=("bob", "tiny-secret"))
        assert reply == "through a real proxy"
        with pytest.raises(ProxyAuthError):
            await echo(origin.ws_url(), proxy=proxy.url)


def test_subprocess_import_guard() -> None:
    # The CLI used above must not need the test network package to import.
    result = subprocess.run(
        [sys.executable, "-c", "import tunnelws.cli.connect"], capture_output=True, check=False
    )
    assert result.returncode == 0, result.stderr
