"""OriginConfig.on_request: the origin's official per-request hook."""

from __future__ import annotations

import json
import ssl

import trio

from tunnelws import open_websocket
from tunnelws_testnet.origin import LocalCA, OriginConfig, RequestInfo, serve_origin


async def test_hook_sees_every_request_as_info_reports_it(
    nursery: trio.Nursery, test_ca: LocalCA
) -> None:
    seen: list[RequestInfo] = []
    config = OriginConfig(tls_port=0, ssl_context=test_ca.server_context(), on_request=seen.append)
    addresses = await nursery.start(serve_origin, config)
    client_context = ssl.create_default_context(cafile=str(test_ca.ca_pem_path))

    async with open_websocket(
        addresses.wss_url("/info"),
        proxy=None,
        ssl_context=client_context,
        extra_headers=[("X-Trace", "abc 123")],
    ) as ws:
        reported = json.loads(await ws.receive())
    # A request the server refuses (404) still reaches the hook, in order.
    host, port = addresses.http
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(b"GET /nowhere?q=1 HTTP/1.1\r\nHost: origin.test\r\n\r\n")
        with trio.fail_after(5):
            assert (await stream.receive_some(4096)).startswith(b"HTTP/1.1 404")

    assert [info.target for info in seen] == ["/info", "/nowhere?q=1"]
    websocket, missing = seen
    # The hook gets what /info reports (the WebSocket-only fields aside).
    expected = {key: value for key, value in reported.items() if key in websocket.to_json()}
    assert websocket.to_json() == expected
    assert websocket.tls and websocket.tls_version is not None
    assert ("X-Trace", "abc 123") in websocket.headers
    assert "sec-websocket-key" in websocket.header_names()
    assert websocket.request_line == "GET /info HTTP/1.1"
    assert missing.method == "GET" and not missing.tls
    assert missing.headers == (("Host", "origin.test"),)
    assert missing.client[0] == host


async def test_without_a_hook_the_server_just_serves(
    nursery: trio.Nursery, test_ca: LocalCA
) -> None:
    addresses = await nursery.start(serve_origin, OriginConfig())
    async with open_websocket(addresses.ws_url(), proxy=None) as ws:
        await ws.send("hello")
        assert await ws.receive() == "hello"
