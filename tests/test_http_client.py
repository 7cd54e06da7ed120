"""HTTP requests along the route (``tunnelws._http_client``): origin form,
absolute form through proxies with their authentication, kept-alive
connections, time limits and typed errors."""

from __future__ import annotations

import json

import pytest
import trio

from companion_support import start_proxy
from tunnelws import HandshakeError, PhaseTimeoutError, ProxyAuthError, route_options
from tunnelws._http_client import HTTPClient
from tunnelws._target import parse_target
from tunnelws_testnet.origin import OriginConfig, RequestInfo, serve_origin


async def test_direct_requests_share_one_kept_alive_connection(nursery) -> None:
    seen: list[RequestInfo] = []
    origin = await nursery.start(serve_origin, OriginConfig(on_request=seen.append))
    client = HTTPClient(parse_target(origin.http_url("/")), route_options(proxy=None))
    try:
        for _ in range(3):
            response = await client.request("GET", "/info", phase="connected", within=5)
            assert response.status == 200
            assert json.loads(response.body)["request_line"] == "GET /info HTTP/1.1"
    finally:
        await client.aclose()
    assert len({info.client for info in seen}) == 1 and len(seen) == 3


async def test_each_lane_keeps_its_own_connection(nursery) -> None:
    seen: list[RequestInfo] = []
    origin = await nursery.start(serve_origin, OriginConfig(on_request=seen.append))
    client = HTTPClient(parse_target(origin.http_url("/")), route_options(proxy=None))
    try:
        for lane in ("up", "down", "up", "down", "up"):
            response = await client.request(
                "GET", f"/info?{lane}", phase="connected", within=5, lane=lane
            )
            assert response.status == 200
    finally:
        await client.aclose()
    by_lane: dict[str, set[tuple[str, int]]] = {}
    for info in seen:
        by_lane.setdefault(info.request_line.split("?")[1].split()[0], set()).add(info.client)
    # One connection per lane, kept and reused; never one lane's for the other.
    assert [len(clients) for clients in by_lane.values()] == [1, 1]
    assert by_lane["up"] != by_lane["down"]


async def test_absolute_form_through_a_proxy_with_digest_after_a_closing_407(nursery) -> None:
    seen: list[RequestInfo] = []
    origin = await nursery.start(serve_origin, OriginConfig(on_request=seen.append))
    proxy = await start_proxy(
        nursery, auth=("alice", "s3cret"), auth_scheme="digest", close_after_407=True
    )
    route = route_options(
        proxy=proxy.url, proxy_auth=("alice", "s3cret"), proxy_auth_schemes=["digest"]
    )
    client = HTTPClient(parse_target(origin.http_url("/")), route)
    try:
        # A POST: Digest's method is the request's (a fallback open here).
        response = await client.request(
            "POST",
            "/echo/_tunnelws/1/open",
            headers=[("Content-Type", "application/json")],
            body=b'{"version": 1}',
            phase="connected",
            within=5,
        )
    finally:
        await client.aclose()
    assert response.status == 201
    assert proxy.stats.absolute_form == 2 and proxy.stats.connections == 2
    assert proxy.stats.statuses[407] == 1 and proxy.stats.auth_rejected == 0
    # The origin got origin form and no credentials.
    assert seen[-1].request_line == "POST /echo/_tunnelws/1/open HTTP/1.1"
    assert "proxy-authorization" not in seen[-1].header_names()


async def test_wrong_credentials_are_a_proxy_auth_error(nursery) -> None:
    origin = await nursery.start(serve_origin, OriginConfig())
    proxy = await start_proxy(nursery, auth=("alice", "s3cret"))
    client = HTTPClient(
        parse_target(origin.http_url("/")),
        route_options(proxy=proxy.url, proxy_auth=("alice", "wrong")),
    )
    with pytest.raises(ProxyAuthError) as info:
        await client.request("GET", "/info", phase="connected", within=5)
    await client.aclose()
    assert "Basic" in info.value.schemes and "wrong" not in str(info.value)


async def _one_answer_per_connection(stream: trio.SocketStream) -> None:
    """Answers one request, keep-alive announced, then closes: the kept
    connection the client holds is dead when it next uses it."""
    async with stream:
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


async def test_a_kept_connection_closed_by_the_server_is_replaced_once(nursery) -> None:
    connections = 0

    async def handler(stream: trio.SocketStream) -> None:
        nonlocal connections
        connections += 1
        await _one_answer_per_connection(stream)

    listeners = await nursery.start(trio.serve_tcp, handler, 0)
    port = listeners[0].socket.getsockname()[1]
    client = HTTPClient(parse_target(f"http://127.0.0.1:{port}/"), route_options(proxy=None))
    try:
        for _ in range(3):
            await trio.sleep(0.05)  # the server has closed the kept connection by now
            response = await client.request("GET", "/", phase="connected", within=5)
            assert response.body == b"ok"
    finally:
        await client.aclose()
    assert connections == 3


async def test_a_connection_opened_ahead_carries_its_lanes_next_request(nursery) -> None:
    seen: list[RequestInfo] = []
    origin = await nursery.start(serve_origin, OriginConfig(on_request=seen.append))
    client = HTTPClient(parse_target(origin.http_url("/")), route_options(proxy=None))
    try:
        first = await client.request("GET", "/info?up", phase="connected", within=5, lane="up")
        await client.open_ahead("down", 5)  # the route is chosen: it connects at once
        second = await client.request("GET", "/info?down", phase="connected", within=5, lane="down")
    finally:
        await client.aclose()
    assert first.status == second.status == 200
    # The down request went on the connection opened ahead, not the up one.
    assert len(seen) == 2 and seen[0].client != seen[1].client


async def test_a_connection_opened_ahead_and_closed_by_the_server_is_replaced(nursery) -> None:
    connections = 0

    async def handler(stream: trio.SocketStream) -> None:
        nonlocal connections
        connections += 1
        if connections == 2:  # the one opened ahead: closed before any request
            await stream.aclose()
            return
        await _one_answer_per_connection(stream)

    listeners = await nursery.start(trio.serve_tcp, handler, 0)
    port = listeners[0].socket.getsockname()[1]
    client = HTTPClient(parse_target(f"http://127.0.0.1:{port}/"), route_options(proxy=None))
    try:
        assert (await client.request("GET", "/", phase="connected", within=5)).body == b"ok"
        await client.open_ahead("down", 5)
        await trio.sleep(0.05)  # the server has closed it by now
        response = await client.request("GET", "/", phase="connected", within=5, lane="down")
        assert response.body == b"ok"
    finally:
        await client.aclose()
    assert connections == 3


async def test_closing_the_client_ends_a_connection_opened_ahead(nursery) -> None:
    client = HTTPClient(parse_target("http://127.0.0.1:9/"), route_options(proxy=None))
    with trio.fail_after(2):
        async with trio.open_nursery() as inner:
            inner.start_soon(client.open_ahead, "down", 60)  # waits for a route forever
            await trio.sleep(0.05)
            await client.aclose()


@pytest.mark.parametrize(
    ("answer", "error", "text"),
    [
        (None, PhaseTimeoutError, "waiting for the answer to GET /"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", HandshakeError, "malformed HTTP response"),
    ],
)
async def test_silence_and_garbage_are_typed(nursery, answer, error, text) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some(65536)
            if answer is None:
                await trio.sleep_forever()
            await stream.send_all(answer)

    listeners = await nursery.start(trio.serve_tcp, handler, 0)
    port = listeners[0].socket.getsockname()[1]
    client = HTTPClient(parse_target(f"http://127.0.0.1:{port}/"), route_options(proxy=None))
    with trio.fail_after(5), pytest.raises(error) as info:
        await client.request("GET", "/", phase="connected", within=0.5)
    await client.aclose()
    assert text in str(info.value)
