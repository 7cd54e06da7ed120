"""The gateway in front of a third-party WebSocket server (python-websockets
in a subprocess): native upgrades relayed, fallback sessions turned into
WebSockets to the backend, the shim served, and the command line."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

import tunnelws
from fallback_support import Client, http_request, messages_of, text
from tunnelws_testnet.gateway import GatewayConfig, RunningGateway, serve_gateway

BACKEND_SCRIPT = Path(__file__).resolve().parent / "ws_backend.py"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def websockets_backend() -> AsyncIterator[int]:
    """python-websockets serving on a free port, killed by PID afterwards."""
    port = _free_port()
    process = await trio.lowlevel.open_process(
        [sys.executable, "-u", str(BACKEND_SCRIPT), str(port)], stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        with trio.fail_after(10):
            ready = b""
            while b"ready" not in ready:
                chunk = await process.stdout.receive_some(100)
                assert chunk, "the backend exited"
                ready += chunk
        yield port
    finally:
        process.kill()
        await process.wait()


@asynccontextmanager
async def gateway_for(backend: str) -> AsyncIterator[RunningGateway]:
    async with trio.open_nursery() as nursery:
        gateway = await nursery.start(serve_gateway, GatewayConfig(backend=backend))
        yield gateway
        nursery.cancel_scope.cancel()


async def test_native_websockets_are_relayed_as_they_are() -> None:
    async with websockets_backend() as port, gateway_for(f"ws://127.0.0.1:{port}") as gateway:
        async with tunnelws.open_websocket(
            gateway.ws_url("/echo"), proxy=None, subprotocols=["chat.v1"]
        ) as ws:
            assert ws.subprotocol == "chat.v1"
            await ws.send("native text")
            assert await ws.receive() == "native text"
            await ws.send(b"\x00\xff" * 1000)
            assert await ws.receive() == b"\x00\xff" * 1000
            await ws.close(4003, "see you")
            assert (ws.close_code, ws.close_reason) == (4003, "see you")
        async with tunnelws.open_websocket(gateway.ws_url("/headers?x=1"), proxy=None) as ws:
            seen = json.loads(await ws.receive())  # type: ignore[arg-type]
            assert seen["path"] == "/headers?x=1"
            names = [name.lower() for name, _ in seen["headers"]]
            assert "x-forwarded-for" in names and "sec-websocket-key" in names
        with pytest.raises(tunnelws.HandshakeError) as refused:
            async with tunnelws.open_websocket(gateway.ws_url("/reject"), proxy=None):
                pass
        assert refused.value.status == 403


async def test_each_fallback_session_is_one_websocket_to_the_backend() -> None:
    async with websockets_backend() as port, gateway_for(f"ws://127.0.0.1:{port}") as gateway:
        client = Client(gateway.address, "/echo")
        assert (await client.open(subprotocols=["nope", "chat.v1"])).status == 201
        assert client.opened["subprotocol"] == "chat.v1", "the backend chose"
        await client.up([text(1, "over http"), {"seq": 2, "type": "binary", "data": "AAEC"}])
        got = messages_of(await client.poll_events())
        while len(got) < 2:
            got += messages_of(await client.poll_events(got[-1].seq if got else 0))
        assert [(m.kind, m.data) for m in got] == [("text", "over http"), ("binary", b"\0\1\2")]
        await client.up([{"seq": 3, "type": "close", "code": 4001, "reason": "done"}], ack=2)
        (close,) = messages_of(await client.poll_events(2))
        assert (close.kind, close.code, close.data) == ("close", 4001, "done"), "backend's echo"


async def test_backend_headers_close_and_refusal_reach_the_fallback_client() -> None:
    async with websockets_backend() as port, gateway_for(f"ws://127.0.0.1:{port}/") as gateway:
        client = Client(gateway.address, "/headers")
        reply = await http_request(
            gateway.address, "POST", "/headers/_tunnelws/1/open",
            {"version": 1, "headers": [["X-Client", "42"], ["Origin", "http://forged.test"]]},
            headers=[("Origin", "http://page.test"), ("User-Agent", "test-browser")],
        )
        client.session = reply.json()["session"]
        (first,) = messages_of(await client.poll_events())
        seen = {name.lower(): value for name, value in json.loads(first.data)["headers"]}
        assert seen["x-client"] == "42"
        assert seen["origin"] == "http://page.test", "the browser's Origin, not the body's"
        assert seen["user-agent"] == "test-browser"
        assert seen["x-forwarded-for"] == "127.0.0.1"

        bye = Client(gateway.address, "/bye")
        await bye.open()
        (close,) = messages_of(await bye.poll_events())
        assert (close.code, close.data) == (4002, "backend says bye")

        refused = await Client(gateway.address, "/reject").open()
        assert refused.status == 502
        assert refused.json()["status"] == 403 and "refused" in refused.json()["error"]


async def test_backend_path_prefix_and_an_unreachable_backend() -> None:
    config = GatewayConfig(backend="ws://127.0.0.1:1/base")
    assert config.backend_resource("/chat?x=1") == "/base/chat?x=1"
    assert config.backend_resource("/") == "/base"
    assert GatewayConfig(backend="ws://h:1").backend_resource("/a?b") == "/a?b"
    with pytest.raises(ValueError, match="ws://"):
        GatewayConfig(backend="wss://h:1")
    async with gateway_for(f"ws://127.0.0.1:{_free_port()}") as gateway:
        reply = await Client(gateway.address).open()
        assert reply.status == 502 and "cannot reach the backend" in reply.json()["error"]
        native = await http_request(gateway.address, "GET", "/echo")
        assert native.status == 502
        shim = await http_request(gateway.address, "GET", "/tunnelws.js")
        assert shim.status == 200 and b"_tunnelws" in shim.body


def test_the_command_line_serves_until_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tunnelws", "gateway", "--listen", "127.0.0.1:0",
         "--backend", "ws://127.0.0.1:9", "--route", "gw1"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("tunnelws gateway listening on http://127.0.0.1:"), line
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
    usage = subprocess.run(
        [sys.executable, "-m", "tunnelws", "gateway", "--backend", "http://x"],
        capture_output=True, text=True, timeout=30,
    )
    assert usage.returncode == 2 and "ws://" in usage.stderr
