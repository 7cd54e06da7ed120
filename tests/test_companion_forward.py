"""Absolute-form forwarding (with Upgrade stripped or passed) and transparent mode."""

from __future__ import annotations

import base64
import hashlib
import json
import os

import pytest
import trio
from websockets.exceptions import InvalidStatus
from websockets.trio.client import connect

from companion_support import Origin, run_curl, start_origin, start_proxy, wait_until_idle
from tunnelws_testnet.companion import RunningProxy

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


async def absolute_form_handshake(proxy: RunningProxy, origin: Origin) -> tuple[bytes, bytes]:
    """A WebSocket handshake sent as ``GET http://...`` to the proxy (what a
    client must never do for ws://, and what the harness looks for); then one
    masked text frame. Returns the response head and whatever followed."""
    key = base64.b64encode(os.urandom(16)).decode()
    stream = await trio.open_tcp_stream(proxy.host, proxy.port)
    request = (
        f"GET http://127.0.0.1:{origin.port}/echo HTTP/1.1\r\nHost: 127.0.0.1:{origin.port}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\nProxy-Authorization: Basic dTpw\r\n\r\n"
    )
    await stream.send_all(request.encode())
    data = b""
    with trio.fail_after(5):
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(4096)
            assert chunk
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        if head.startswith(b"HTTP/1.1 101"):
            accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest())
            assert b"Sec-WebSocket-Accept: " + accept in head
            mask = os.urandom(4)
            payload = b"hi"
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            await stream.send_all(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
            while len(rest) < 4:
                rest += await stream.receive_some(4096)
        else:
            while chunk := await stream.receive_some(4096):
                rest += chunk
    await stream.aclose()
    return head, rest


async def test_absolute_form_passes_upgrade_by_default(nursery: trio.Nursery) -> None:
    origin = await start_origin(nursery)
    proxy = await start_proxy(nursery)
    head, rest = await absolute_form_handshake(proxy, origin)
    assert head.startswith(b"HTTP/1.1 101")
    assert rest[:4] == b"\x81\x02hi"  # the echo, through the forwarded connection
    assert proxy.stats.absolute_form == 1 and proxy.stats.connects == 0
    assert "proxy-authorization" not in origin.requests[0]
    assert origin.requests[0]["via"] == "1.1 tunnelws-companion"


async def test_strip_upgrade_turns_the_handshake_into_a_plain_get(nursery: trio.Nursery) -> None:
    origin = await start_origin(nursery)
    records: list[dict[str, object]] = []
    proxy = await start_proxy(nursery, strip_upgrade=True, log=records.append)
    head, body = await absolute_form_handshake(proxy, origin)
    assert head.startswith(b"HTTP/1.1 200")
    seen = json.loads(body)
    assert "upgrade" not in seen and seen["connection"] == "close"
    await wait_until_idle(proxy)  # the log line is written when the relay ends
    assert records[-1]["event"] == "forward" and records[-1]["upgrade_stripped"] is True


async def test_curl_plain_get_through_an_authenticating_proxy(nursery: trio.Nursery) -> None:
    origin = await start_origin(nursery)
    proxy = await start_proxy(nursery, auth=("u", "pw"))
    result = await run_curl("-x", proxy.url, "--proxy-user", "u:pw", origin.http_url)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert "proxy-authorization" not in seen and seen["host"] == f"127.0.0.1:{origin.port}"
    assert proxy.stats.forwards == 1
    denied = await run_curl(
        "-x", proxy.url, "-w", "%{http_code}", "-o", "/dev/null", origin.http_url
    )
    assert denied.stdout == b"407"


async def websocket_via_redirect(proxy: RunningProxy, origin: Origin) -> str:
    """What a client redirected by a firewall does: it thinks it talks to the
    origin (Host, origin-form target) but its TCP connection ends at the proxy."""
    stream = await trio.open_tcp_stream(proxy.host, proxy.port)
    with trio.fail_after(5):
        async with connect(origin.ws_url, stream=stream, proxy=None) as websocket:
            await websocket.send("redirected")
            reply = await websocket.recv()
    assert isinstance(reply, str)
    return reply


async def test_transparent_mode_forwards_by_host_header(nursery: trio.Nursery) -> None:
    origin = await start_origin(nursery)
    proxy = await start_proxy(nursery, transparent=True)
    assert await websocket_via_redirect(proxy, origin) == "redirected"
    result = await run_curl(
        "--connect-to", f"127.0.0.1:{origin.port}:127.0.0.1:{proxy.port}", origin.http_url
    )
    assert result.returncode == 0 and json.loads(result.stdout)["via"] == "1.1 tunnelws-companion"
    stripping = await start_proxy(nursery, transparent=True, strip_upgrade=True)
    with pytest.raises(InvalidStatus) as caught:
        await websocket_via_redirect(stripping, origin)
    assert caught.value.response.status_code == 200  # the origin saw a plain GET


async def test_origin_form_without_transparent_is_refused(nursery: trio.Nursery) -> None:
    origin = await start_origin(nursery)
    proxy = await start_proxy(nursery)
    with pytest.raises(InvalidStatus) as caught:
        await websocket_via_redirect(proxy, origin)
    assert caught.value.response.status_code == 400
