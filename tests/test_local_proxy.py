"""``local-proxy`` with real clients (curl, python-websockets) in front of
real upstreams (the companion proxy with Digest and NTLM, squid, a PAC with
a dead first proxy): CONNECT and absolute-form, the --allow list, error
statuses, timeouts, graceful shutdown, concurrency."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import trio
from websockets.trio.client import connect

from companion_support import OriginCA, run_curl, start_origin, start_proxy, start_tcp_echo
from peers import run_squid
from relay_support import (
    dead_port,
    echo_through,
    payload,
    raw_connect_via,
    read_head,
    start_local_proxy,
)
from tunnelws import ProxyConfigError, RouteOptions
from tunnelws._local_proxy import LocalProxyOptions, serve_local_proxy

NTLM_USER = "CORP\\alice"
PASSWORD = "pa55-w0rd-xyzzy"


async def ws_echo(url: str, proxy: str) -> str:
    with trio.fail_after(15):
        async with connect(url, proxy=proxy, open_timeout=10) as websocket:
            await websocket.send("hello through local-proxy")
            reply = await websocket.recv()
    assert isinstance(reply, str)
    return reply


def assert_no_credentials(origin_requests: list[dict[str, str]]) -> None:
    encoded = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    for headers in origin_requests:
        assert "proxy-authorization" not in headers
        text = json.dumps(headers)
        assert PASSWORD not in text and encoded not in text


@pytest.mark.parametrize("scheme", ["digest", "ntlm"])
async def test_curl_and_websockets_through_an_authenticating_proxy(
    nursery: trio.Nursery, tmp_path: Path, scheme: str
) -> None:
    ca = OriginCA()
    ca_file = tmp_path / "ca.pem"
    ca.ca.cert_pem.write_to_path(str(ca_file))
    origin = await start_origin(nursery)
    tls_origin = await start_origin(nursery, ca.server_context())
    user = NTLM_USER if scheme == "ntlm" else "alice"
    upstream = await start_proxy(nursery, auth=(user, PASSWORD), auth_scheme=scheme)
    local = await start_local_proxy(
        nursery, RouteOptions(proxy=upstream.url, proxy_auth=(user, PASSWORD))
    )

    plain = await run_curl("-x", local.url, origin.http_url)  # absolute form
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout)["user-agent"].startswith("curl/")
    tunnelled = await run_curl("-x", local.url, "--cacert", str(ca_file), tls_origin.http_url)
    assert tunnelled.returncode == 0, tunnelled.stderr
    assert json.loads(tunnelled.stdout)["host"] == f"127.0.0.1:{tls_origin.port}"
    assert await ws_echo(origin.ws_url, local.url) == "hello through local-proxy"

    stats = upstream.stats
    assert stats.absolute_form >= 1 and stats.tunnels_total >= 2
    assert stats.auth_challenges >= 3  # each request was challenged, then let through
    assert_no_credentials(origin.requests + tls_origin.requests)


async def test_keep_alive_requests_and_a_request_body(nursery: trio.Nursery) -> None:
    origin = await start_origin(nursery)
    upstream = await start_proxy(nursery, auth=("alice", PASSWORD), auth_scheme="digest")
    records: list[dict[str, Any]] = []
    local = await start_local_proxy(
        nursery,
        RouteOptions(proxy=upstream.url, proxy_auth=("alice", PASSWORD)),
        log=records.append,
    )
    # Two URLs on one curl connection: the local proxy keeps it alive.
    result = await run_curl("-x", local.url, origin.http_url, origin.http_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(b"user-agent") == 2
    for _ in range(50):
        if records:
            break
        await trio.sleep(0.05)
    (record,) = records
    assert record["requests"] == 2 and record["status"] == 200
    assert record["route"] == upstream.url and record["method"] == "GET"


@pytest.mark.parametrize("auth", ["basic", "digest"])
async def test_squid_upstream(nursery: trio.Nursery, tmp_path: Path, auth: str) -> None:
    origin = await start_origin(nursery)
    credentials = ("alice", PASSWORD)
    kwargs = {"basic_auth": credentials} if auth == "basic" else {"digest_auth": credentials}
    with run_squid(tmp_path=tmp_path, allow_ports=None, **kwargs) as squid:
        local = await start_local_proxy(
            nursery, RouteOptions(proxy=squid.url, proxy_auth=credentials)
        )
        plain = await run_curl("-x", local.url, origin.http_url)
        assert plain.returncode == 0, plain.stderr
        assert "squid" in json.loads(plain.stdout).get("via", "")  # squid forwarded it
        tunnelled = await run_curl("-p", "-x", local.url, origin.http_url)
        assert tunnelled.returncode == 0, tunnelled.stderr
        assert await ws_echo(origin.ws_url, local.url) == "hello through local-proxy"
        log = await squid.wait_for_access_log_async("CONNECT 127.0.0.1")
        assert f"GET http://127.0.0.1:{origin.port}/info" in log and " alice " in log
    assert_no_credentials(origin.requests)


async def test_pac_failover_past_a_dead_first_proxy(nursery: trio.Nursery, tmp_path: Path) -> None:
    origin = await start_origin(nursery)
    upstream = await start_proxy(nursery)
    pac = tmp_path / "proxy.pac"
    pac.write_text(
        "function FindProxyForURL(url, host) {\n"
        f'  return "PROXY 127.0.0.1:{dead_port()}; PROXY 127.0.0.1:{upstream.port}";\n'
        "}\n"
    )
    lines: list[str] = []
    local = await start_local_proxy(
        nursery, RouteOptions(proxy=f"pac+file://{pac}", trace=lines.append)
    )
    plain = await run_curl("-x", local.url, origin.http_url)
    assert plain.returncode == 0, plain.stderr
    tunnelled = await run_curl("-p", "-x", local.url, origin.http_url)
    assert tunnelled.returncode == 0, tunnelled.stderr
    assert await ws_echo(origin.ws_url, local.url) == "hello through local-proxy"
    assert upstream.stats.absolute_form == 1 and upstream.stats.tunnels_total == 2
    failed_over = [line for line in lines if "Route 1/2" in line and "failed" in line]
    assert len(failed_over) == 3, lines


async def test_destinations_reached_directly_never_see_credentials(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    origin = await start_origin(nursery)
    upstream = await start_proxy(nursery, auth=("alice", PASSWORD))
    pac = tmp_path / "proxy.pac"
    pac.write_text(
        "function FindProxyForURL(url, host) {\n"
        f'  if (url.indexOf(":{origin.port}") >= 0) return "DIRECT";\n'
        f'  return "PROXY 127.0.0.1:{upstream.port}";\n'
        "}\n"
    )
    local = await start_local_proxy(
        nursery,
        RouteOptions(
            proxy=f"pac+file://{pac}",
            proxy_auth=("alice", PASSWORD),
            proxy_headers=(("X-Corp-Token", "for-the-proxy-only"),),
        ),
    )
    for args in ((), ("-p",)):
        # The client's own proxy credentials are for the local proxy, which drops them.
        header = "Proxy-Authorization: Basic eA=="
        result = await run_curl(*args, "-x", local.url, "--proxy-header", header, origin.http_url)
        assert result.returncode == 0, result.stderr
    assert await ws_echo(origin.ws_url, local.url) == "hello through local-proxy"
    assert upstream.stats.connections == 0  # DIRECT, as the PAC said
    assert len(origin.requests) == 3
    assert_no_credentials(origin.requests)
    assert not any("x-corp-token" in headers for headers in origin.requests)
    assert not any("eA==" in json.dumps(headers) for headers in origin.requests)


async def test_200_concurrent_tunnels(nursery: trio.Nursery) -> None:
    echo_port = await start_tcp_echo(nursery)
    upstream = await start_proxy(nursery)
    local = await start_local_proxy(nursery, RouteOptions(proxy=upstream.url))
    failures: list[str] = []

    async def one(index: int) -> None:
        stream, head, rest = await raw_connect_via(local.url, f"127.0.0.1:{echo_port}")
        assert head.startswith(b"HTTP/1.1 200"), head
        data = payload(16384) + index.to_bytes(4, "big")
        echoed = rest + await echo_through(stream, data)
        if echoed != data:
            failures.append(f"tunnel {index}: {len(echoed)} bytes back")
        await stream.aclose()

    with trio.fail_after(90):
        async with trio.open_nursery() as clients:
            for index in range(200):
                clients.start_soon(one, index)
    assert failures == []
    assert upstream.stats.tunnels_total == 200 and local.connections_total == 200


async def test_clients_outside_allow_are_refused(nursery: trio.Nursery) -> None:
    echo_port = await start_tcp_echo(nursery)
    records: list[dict[str, Any]] = []
    local = await start_local_proxy(
        nursery, RouteOptions(proxy=None), allow=("127.0.0.2/32",), log=records.append
    )
    stream, head, _ = await raw_connect_via(local.url, f"127.0.0.1:{echo_port}")
    await stream.aclose()
    assert head.startswith(b"HTTP/1.1 403 "), head
    assert b"X-Tunnelws-Error: not-allowed" in head
    allowed, head, rest = await raw_connect_via(
        local.url, f"127.0.0.1:{echo_port}", local_address="127.0.0.2"
    )
    assert head.startswith(b"HTTP/1.1 200"), head
    assert rest + await echo_through(allowed, b"from an allowed address") == (
        b"from an allowed address"
    )
    assert local.refused == 1
    assert any(r.get("error") == "not-allowed" and r["status"] == 403 for r in records)


async def test_failures_become_statuses_with_the_taxonomy_category(
    nursery: trio.Nursery,
) -> None:
    echo_port = await start_tcp_echo(nursery)
    upstream = await start_proxy(nursery, auth=("alice", PASSWORD), allow_ports=[echo_port])
    wrong = await start_local_proxy(
        nursery, RouteOptions(proxy=upstream.url, proxy_auth=("alice", "wrong"))
    )
    right = await start_local_proxy(
        nursery, RouteOptions(proxy=upstream.url, proxy_auth=("alice", PASSWORD))
    )
    direct = await start_local_proxy(nursery, RouteOptions(proxy=None))
    cases = [
        (wrong, f"127.0.0.1:{echo_port}", b"502", b"proxy-auth"),
        (right, f"127.0.0.1:{dead_port()}", b"403", b"proxy-refused"),  # port policy
        (direct, f"127.0.0.1:{dead_port()}", b"502", b"connect"),
        (direct, "no-port-here", b"400", b"bad-request"),
    ]
    for local, target, status, category in cases:
        stream, head, body = await raw_connect_via(local.url, target)
        await stream.aclose()
        assert head.startswith(b"HTTP/1.1 " + status), (target, head)
        assert b"X-Tunnelws-Error: " + category in head
        assert body.startswith(b"tunnelws local-proxy: " + category)
        assert PASSWORD.encode() not in head + body and b"wrong" not in head + body
    stream = await trio.open_tcp_stream(*direct.address)
    await stream.send_all(b"GET /origin-form HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _ = await read_head(stream)
    assert head.startswith(b"HTTP/1.1 400"), head
    stream = await trio.open_tcp_stream(*direct.address)
    huge = b"X-Filler: " + b"y" * (200 * 1024)
    await stream.send_all(b"GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: x\r\n" + huge + b"\r\n\r\n")
    head, _ = await read_head(stream)
    assert head.startswith(b"HTTP/1.1 431"), head  # bounded: the head is not buffered on


async def test_head_and_idle_timeouts(nursery: trio.Nursery) -> None:
    echo_port = await start_tcp_echo(nursery)
    records: list[dict[str, Any]] = []
    local = await start_local_proxy(
        nursery,
        RouteOptions(proxy=None),
        head_timeout=0.3,
        idle_timeout=0.5,
        log=records.append,
    )
    silent = await trio.open_tcp_stream(*local.address)
    head, _ = await read_head(silent, limit=5)
    assert head.startswith(b"HTTP/1.1 408"), head
    stream, head, _ = await raw_connect_via(local.url, f"127.0.0.1:{echo_port}")
    assert head.startswith(b"HTTP/1.1 200")
    await stream.send_all(b"x")
    with trio.fail_after(5):
        assert await stream.receive_some() == b"x"
        assert await stream.receive_some() == b""  # closed after 0.5 s of silence
    await trio.sleep(0.1)
    assert [r["end"] for r in records] == ["idle-timeout", "idle-timeout"]


async def test_graceful_shutdown(nursery: trio.Nursery) -> None:
    echo_port = await start_tcp_echo(nursery)
    local = await start_local_proxy(nursery, RouteOptions(proxy=None))
    stream, head, _ = await raw_connect_via(local.url, f"127.0.0.1:{echo_port}")
    assert head.startswith(b"HTTP/1.1 200")
    done = trio.Event()

    async def stop() -> None:
        await local.shutdown(grace=30)
        done.set()

    nursery.start_soon(stop)
    await trio.sleep(0.2)
    with pytest.raises(OSError):
        await trio.open_tcp_stream(*local.address)  # no longer accepting
    await stream.send_all(b"still served")  # the open tunnel keeps working
    with trio.fail_after(5):
        assert await stream.receive_some() == b"still served"
    assert not done.is_set()
    await stream.aclose()
    with trio.fail_after(5):  # well before the 30 s grace
        await done.wait()


async def test_an_upstream_that_is_the_local_proxy_itself_is_refused() -> None:
    port = dead_port()
    env = {"https_proxy": f"http://127.0.0.1:{port}"}
    options = LocalProxyOptions(listen=("127.0.0.1", port), route=RouteOptions(env=env))
    with pytest.raises(ProxyConfigError, match="this local proxy itself"):
        await serve_local_proxy(options)


@pytest.mark.parametrize("upstream_kind", ["direct", "proxy"])
async def test_websocket_upgrade_in_absolute_form(
    nursery: trio.Nursery, upstream_kind: str
) -> None:
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, Request, TextMessage

    origin = await start_origin(nursery)
    route = RouteOptions(proxy=None)
    if upstream_kind == "proxy":
        route = RouteOptions(proxy=(await start_proxy(nursery)).url)
    local = await start_local_proxy(nursery, route)
    ws = WSConnection(ConnectionType.CLIENT)
    handshake = ws.send(Request(host=f"127.0.0.1:{origin.port}", target="/echo"))
    absolute = f"GET http://127.0.0.1:{origin.port}/echo ".encode()
    stream = await trio.open_tcp_stream(*local.address)
    await stream.send_all(handshake.replace(b"GET /echo ", absolute, 1))
    events: list[object] = []
    with trio.fail_after(10):
        while not any(isinstance(e, AcceptConnection) for e in events):
            ws.receive_data(await stream.receive_some())
            events += list(ws.events())
        await stream.send_all(ws.send(TextMessage(data="upgraded through local-proxy")))
        while not any(isinstance(e, TextMessage) for e in events):
            ws.receive_data(await stream.receive_some())
            events += list(ws.events())
    (message,) = [e for e in events if isinstance(e, TextMessage)]
    assert message.data == "upgraded through local-proxy"
    await stream.aclose()
