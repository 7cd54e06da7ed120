"""The companion proxy against real clients (curl, python-websockets):
tunnels, the JSON log and stats, Basic and Digest auth, policy, https://."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from websockets.exceptions import InvalidProxyStatus
from websockets.trio.client import connect

from companion_support import (
    OriginCA,
    raw_connect,
    run_curl,
    start_origin,
    start_proxy,
    start_tcp_echo,
    wait_until_idle,
)


async def ws_echo(url: str, proxy: str, **kwargs: Any) -> str:
    with trio.fail_after(10):
        async with connect(url, proxy=proxy, open_timeout=5, **kwargs) as websocket:
            await websocket.send("hello through the proxy")
            reply = await websocket.recv()
    assert isinstance(reply, str)
    return reply


async def test_curl_tunnel_is_relayed_logged_and_counted(nursery: trio.Nursery) -> None:
    origin = await start_origin(nursery)
    records: list[dict[str, Any]] = []
    proxy = await start_proxy(nursery, log=records.append)
    result = await run_curl("-p", "-x", proxy.url, origin.http_url)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["user-agent"].startswith("curl/")
    await wait_until_idle(proxy)
    stats = proxy.stats
    assert (stats.connects, stats.tunnels_total, stats.statuses[200]) == (1, 1, 1)
    assert stats.bytes_up > 50 and stats.bytes_down > len(result.stdout)
    assert stats.targets[f"127.0.0.1:{origin.port}"] == 1
    (record,) = records
    assert record["event"] == "tunnel" and record["status"] == 200
    assert record["target"] == f"127.0.0.1:{origin.port}" and record["end"] == "closed"
    assert record["bytes_down"] == stats.bytes_down and record["user"] is None
    json.dumps(record)  # one JSON line per tunnel


async def test_log_file_gets_json_lines(nursery: trio.Nursery, tmp_path: Path) -> None:
    origin = await start_origin(nursery)
    log = tmp_path / "proxy.log"
    proxy = await start_proxy(nursery, log=str(log), auth=("u", "secret-pw"))
    await run_curl("-p", "-x", proxy.url, "--proxy-user", "u:wrong", origin.http_url)
    await run_curl("-p", "-x", proxy.url, "--proxy-user", "u:secret-pw", origin.http_url)
    await wait_until_idle(proxy)
    text = log.read_text()
    events = [json.loads(line)["event"] for line in text.splitlines()]
    assert events == ["auth-required", "tunnel"]
    assert "secret-pw" not in text and "wrong" not in text.replace("wrong credentials", "")


async def test_websockets_ws_and_wss_with_basic_auth(nursery: trio.Nursery) -> None:
    ca = OriginCA()
    plain = await start_origin(nursery)
    secure = await start_origin(nursery, ca.server_context())
    proxy = await start_proxy(nursery, auth=("alice", "p@ss:word"))
    proxy_url = f"http://alice:p%40ss%3Aword@127.0.0.1:{proxy.port}"
    assert await ws_echo(plain.ws_url, proxy_url) == "hello through the proxy"
    reply = await ws_echo(secure.ws_url, proxy_url, ssl=ca.client_context())
    assert reply == "hello through the proxy"
    for origin in (plain, secure):
        assert all("proxy-authorization" not in headers for headers in origin.requests)
    assert proxy.stats.auth_challenges == 0 and proxy.stats.tunnels_total == 2
    with pytest.raises(InvalidProxyStatus) as caught:
        await ws_echo(plain.ws_url, proxy.url)  # no credentials
    assert caught.value.response.status_code == 407
    assert proxy.stats.auth_challenges == 1


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
async def test_curl_digest_auth(nursery: trio.Nursery, algorithm: str) -> None:
    origin = await start_origin(nursery)
    proxy = await start_proxy(
        nursery, auth=("u", "pw"), auth_scheme="digest", digest_algorithm=algorithm, realm="corp"
    )
    result = await run_curl(
        "-p", "-x", proxy.url, "--proxy-user", "u:pw", "--proxy-digest", origin.http_url
    )
    assert result.returncode == 0, result.stderr
    # One challenge, answered on the same connection.
    assert (proxy.stats.connects, proxy.stats.auth_challenges, proxy.stats.connections) == (2, 1, 1)
    wrong = await run_curl(
        "-p", "-x", proxy.url, "--proxy-user", "u:nope", "--proxy-digest", origin.http_url
    )
    assert wrong.returncode != 0 and b"407" in wrong.stderr
    assert proxy.stats.auth_rejected == 1


async def test_close_after_407_forces_a_new_connection(nursery: trio.Nursery) -> None:
    origin = await start_origin(nursery)
    proxy = await start_proxy(nursery, auth=("u", "pw"), auth_scheme="digest", close_after_407=True)
    reply = await raw_connect(proxy, f"127.0.0.1:{origin.port}")
    assert reply.status == 407 and b"Connection: close" in reply.head
    with trio.fail_after(2):
        rest = b""
        while chunk := await reply.stream.receive_some(4096):
            rest += chunk  # the HTML body, then EOF
    await reply.stream.aclose()
    result = await run_curl(
        "-p", "-x", proxy.url, "--proxy-user", "u:pw", "--proxy-digest", origin.http_url
    )
    assert result.returncode == 0, result.stderr
    assert proxy.stats.connections == 3  # the raw probe, then curl's two connections


async def test_port_policy_refuses_curl_with_403_and_html(nursery: trio.Nursery) -> None:
    origin = await start_origin(nursery)
    proxy = await start_proxy(nursery, allow_ports=frozenset({443}))
    result = await run_curl("-p", "-x", proxy.url, origin.http_url)
    assert result.returncode != 0 and b"403" in result.stderr
    reply = await raw_connect(proxy, f"127.0.0.1:{origin.port}")
    assert reply.status == 403 and b"Content-Type: text/html" in reply.head
    await reply.stream.aclose()
    allowed = await start_proxy(nursery, allow_ports=frozenset({origin.port}))
    assert (await run_curl("-p", "-x", allowed.url, origin.http_url)).returncode == 0


async def test_host_policy_names_and_cidrs(nursery: trio.Nursery) -> None:
    origin = await start_origin(nursery)
    by_cidr = await start_proxy(nursery, deny_hosts=("127.0.0.0/8",), deny_status=502)
    with pytest.raises(InvalidProxyStatus) as caught:
        await ws_echo(origin.ws_url, by_cidr.url)
    assert caught.value.response.status_code == 502
    by_name = await start_proxy(nursery, allow_hosts=("localhost",))
    denied = await run_curl("-p", "-x", by_name.url, origin.http_url)  # 127.0.0.1 is not listed
    assert b"403" in denied.stderr
    localhost_url = origin.http_url.replace("127.0.0.1", "localhost")
    assert (await run_curl("-p", "-x", by_name.url, localhost_url)).returncode == 0


async def test_unreachable_origin_gets_502(nursery: trio.Nursery) -> None:
    proxy = await start_proxy(nursery)
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    reply = await raw_connect(proxy, f"127.0.0.1:{free_port}")
    assert reply.status == 502 and b"<html>" in reply.head + await reply.stream.receive_some(4096)
    await reply.stream.aclose()


async def test_https_proxy_with_tls_in_tls(nursery: trio.Nursery, tmp_path: Path) -> None:
    ca = OriginCA()
    origin = await start_origin(nursery, ca.server_context())
    proxy = await start_proxy(nursery, ssl_context=ca.server_context())
    assert proxy.url.startswith("https://")
    reply = await ws_echo(
        origin.ws_url, proxy.url, ssl=ca.client_context(), proxy_ssl=ca.client_context()
    )
    assert reply == "hello through the proxy"
    ca_file = tmp_path / "ca.pem"
    ca.ca.cert_pem.write_to_path(str(ca_file))
    result = await run_curl(
        "-p",
        "-x",
        proxy.url,
        "--proxy-cacert",
        str(ca_file),
        "--cacert",
        str(ca_file),
        origin.http_url,
    )
    assert result.returncode == 0, result.stderr


async def test_ipv6_target_and_bytes_pipelined_behind_the_connect(nursery: trio.Nursery) -> None:
    port = await start_tcp_echo(nursery, host="::1")
    proxy = await start_proxy(nursery)
    reply = await raw_connect(proxy, f"[::1]:{port}", extra=b"early bytes")
    assert reply.status == 200
    echoed = reply.head.partition(b"\r\n\r\n")[2]
    with trio.fail_after(5):
        while len(echoed) < len(b"early bytes"):
            echoed += await reply.stream.receive_some(100)
    assert echoed == b"early bytes"
    await reply.stream.aclose()
    assert proxy.stats.targets[f"[::1]:{port}"] == 1
