"""SOCKS5 / SOCKS5h tunnels against real SOCKS servers: pproxy (PyPI) and
microsocks (Debian), with and without username/password."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

import tunnelws
from companion_support import start_tcp_echo
from conftest import require_binary
from peers import RunningProxy, _instance_counter, _running, _spawn, _start_with_retry, _tail

pytest.importorskip("python_socks")

USER, PASSWORD = "sockuser", "sock-pass"


@contextlib.contextmanager
def run_socks(
    kind: str, tmp_path: Path, auth: tuple[str, str] | None = None
) -> Iterator[RunningProxy]:
    """pproxy ``-l socks5://`` or microsocks on a free loopback port."""
    output_path = tmp_path / f"{kind}-{next(_instance_counter)}.log"

    def launch(port: int):  # type: ignore[no-untyped-def]
        if kind == "pproxy":
            listen = f"socks5://127.0.0.1:{port}" + (f"#{auth[0]}:{auth[1]}" if auth else "")
            argv = [sys.executable, "-u", "-m", "pproxy", "-l", listen, "-v"]
            if auth:
                argv += ["--auth", "0"]  # check credentials on every connection
        else:
            argv = [require_binary("microsocks"), "-i", "127.0.0.1", "-p", str(port)]
            if auth:
                argv += ["-u", auth[0], "-P", auth[1]]
        process = _spawn(argv, output_path)
        return process, lambda: _tail(output_path)

    process, port = _start_with_retry(launch)
    proxy = RunningProxy(
        f"socks5://127.0.0.1:{port}", "127.0.0.1", port, process.pid, kind, output_path
    )
    with _running(process, proxy) as running:
        yield running


async def echo(url: str, host: str, port: int, **kwargs: object) -> tuple[bytes, list[str]]:
    lines: list[str] = []
    stream = await tunnelws.open_tunnel(
        host,
        port,
        proxy=url,
        trace=lines.append,
        connect_timeout=5,
        **kwargs,  # type: ignore[arg-type]
    )
    async with stream:
        await stream.send_all(b"over socks")
        with trio.fail_after(5):
            return bytes(await stream.receive_some(100)), lines


async def wait_for_log(proxy: RunningProxy, needle: str) -> str:
    for _ in range(100):
        text = proxy.access_log()
        if needle in text:
            return text
        await trio.sleep(0.02)
    raise AssertionError(f"{needle!r} not in {proxy.name} log: {proxy.access_log()!r}")


@pytest.mark.parametrize("kind", ["pproxy", "microsocks"])
@pytest.mark.parametrize("with_auth", [False, True])
async def test_socks5h_with_and_without_credentials(
    nursery: trio.Nursery, tmp_path: Path, kind: str, with_auth: bool
) -> None:
    echo_port = await start_tcp_echo(nursery)
    auth = (USER, PASSWORD) if with_auth else None
    with run_socks(kind, tmp_path, auth) as proxy:
        creds = f"{USER}:{PASSWORD}@" if with_auth else ""
        url = f"socks5h://{creds}127.0.0.1:{proxy.port}"
        reply, lines = await echo(url, "localhost", echo_port)
        assert reply == b"over socks"
        assert any("name resolved by the proxy" in line for line in lines)
        assert PASSWORD not in "\n".join(lines)
        if kind == "pproxy":
            # pproxy logs the destination exactly as the client sent it.
            await wait_for_log(proxy, f"localhost:{echo_port}")


async def test_socks5_resolves_locally_and_sends_the_address(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    echo_port = await start_tcp_echo(nursery)
    with run_socks("pproxy", tmp_path) as proxy:
        reply, lines = await echo(f"socks5://127.0.0.1:{proxy.port}", "localhost", echo_port)
        assert reply == b"over socks"
        assert any("name resolved by this client" in line for line in lines)
        log = await wait_for_log(proxy, f"127.0.0.1:{echo_port}")
        assert f"localhost:{echo_port}" not in log


async def test_socks5h_sends_a_name_only_the_proxy_could_resolve(tmp_path: Path) -> None:
    """``.invalid`` resolves nowhere: with socks5h the proxy gets the name and
    reports the failure; with socks5 the client fails before asking it."""
    with run_socks("microsocks", tmp_path) as proxy:
        # microsocks resolves, fails, and answers with a SOCKS error reply.
        with pytest.raises(tunnelws.ProxyRefusedError) as info:
            await echo(f"socks5h://127.0.0.1:{proxy.port}", "origin.invalid", 9)
        assert info.value.status in (1, 4)  # general failure / host unreachable
        assert "refused the tunnel to origin.invalid:9" in str(info.value)
        with pytest.raises(tunnelws.DirectConnectError, match="socks5h:// lets the proxy"):
            await echo(f"socks5://127.0.0.1:{proxy.port}", "origin.invalid", 9)
    with run_socks("pproxy", tmp_path) as proxy:
        # pproxy answers success first and connects afterwards; its log shows
        # the unresolved name it received.
        with contextlib.suppress(tunnelws.TunnelError, trio.BrokenResourceError):
            await echo(f"socks5h://127.0.0.1:{proxy.port}", "origin.invalid", 9)
        await wait_for_log(proxy, "origin.invalid")


@pytest.mark.parametrize("kind", ["pproxy", "microsocks"])
async def test_wrong_or_missing_socks_credentials(tmp_path: Path, kind: str) -> None:
    with run_socks(kind, tmp_path, (USER, PASSWORD)) as proxy:
        # microsocks answers "authentication failed" (RFC 1929); pproxy hangs up.
        expected = tunnelws.ProxyAuthError if kind == "microsocks" else tunnelws.ProxyProtocolError
        with pytest.raises(expected) as info:
            await echo(f"socks5h://{USER}:wrong-pw@127.0.0.1:{proxy.port}", "localhost", 9)
        assert "wrong-pw" not in str(info.value)
        if kind == "pproxy":
            assert "close the connection on wrong credentials" in str(info.value)
        with pytest.raises(expected, match=r"requires? a user name and password"):
            await echo(f"socks5h://127.0.0.1:{proxy.port}", "localhost", 9)


async def test_dead_socks_proxy_is_a_proxy_connect_error(tmp_path: Path) -> None:
    with run_socks("microsocks", tmp_path) as proxy:
        port = proxy.port
    with pytest.raises(tunnelws.ProxyConnectError):
        await echo(f"socks5h://127.0.0.1:{port}", "localhost", 9)


async def test_websocket_over_socks5h(origin, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tunnelws._websocket import open_websocket

    with run_socks("microsocks", tmp_path) as proxy:
        async with open_websocket(origin.ws_url(), proxy=f"socks5h://127.0.0.1:{proxy.port}") as ws:
            await ws.send("hello")
            with trio.fail_after(5):
                assert await ws.receive() == "hello"
