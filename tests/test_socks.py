"""SOCKS5 / SOCKS5h tunnels against real SOCKS servers: pproxy (PyPI) and
microsocks (Debian), with and without username/password."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import python_socks  # noqa: F401  a core dependency: missing, the install is broken (fail, never skip)
import trio

import tunnelws
from companion_support import start_tcp_echo
from peers import run_socks

USER, PASSWORD = "sockuser", "sock-pass"


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
            await proxy.wait_for_access_log_async(f"localhost:{echo_port}")


async def test_socks5_resolves_locally_and_sends_the_address(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    echo_port = await start_tcp_echo(nursery)
    with run_socks("pproxy", tmp_path) as proxy:
        reply, lines = await echo(f"socks5://127.0.0.1:{proxy.port}", "localhost", echo_port)
        assert reply == b"over socks"
        assert any("name resolved by this client" in line for line in lines)
        log = await proxy.wait_for_access_log_async(f"127.0.0.1:{echo_port}")
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
        await proxy.wait_for_access_log_async("origin.invalid")


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
