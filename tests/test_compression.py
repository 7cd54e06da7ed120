"""permessage-deflate end to end: tunnelws against third-party servers
(python-websockets, Node `ws`) and the origin test server, bytes on the wire
counted by the tunnel, a compression bomb from a real server,
`tunnelws connect --no-compression`, and (with a pinging server) the
background reader answering pings while nobody receives."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.trio.server import ServerConnection, serve

import tunnelws
from conftest import NODE_MODULES, require_node_ws
from scripted_proxy import ScriptedProxy, Step

NODE_SERVER = Path(__file__).resolve().parent / "node" / "deflate_server.mjs"
# JSON-like and compressible: about 1 MiB that deflates to a few percent.
DOCUMENT = json.dumps(
    [{"id": i, "user": f"user{i % 97}", "event": "click", "ok": True} for i in range(16000)]
)


async def start_proxy(nursery: trio.Nursery) -> ScriptedProxy:
    proxy = ScriptedProxy([Step()])
    await nursery.start(proxy.serve)
    return proxy


async def start_websockets_server(nursery: trio.Nursery, **options: object) -> int:
    async def echo(connection: ServerConnection) -> None:
        async for message in connection:
            await connection.send(message)

    server = await nursery.start(
        lambda task_status: serve(
            echo, 0, host="127.0.0.1", max_size=None, task_status=task_status, **options
        )
    )
    return int(server.listeners[0].socket.getsockname()[1])


async def echo_through(proxy: ScriptedProxy, url: str, **kwargs: object) -> str:
    async with tunnelws.open_websocket(url, proxy=proxy.url, **kwargs) as ws:  # type: ignore[arg-type]
        await ws.send(DOCUMENT)
        assert await ws.receive() == DOCUMENT
        await ws.send(DOCUMENT.encode())
        assert await ws.receive() == DOCUMENT.encode()
        for i in range(20):  # small ones too, each sharing the window
            await ws.send(f"message {i}")
            assert await ws.receive() == f"message {i}"
        return ws.extensions


def assert_compressed_both_ways(proxy: ScriptedProxy) -> None:
    sent = 2 * len(DOCUMENT)
    assert proxy.relayed["up"] < sent / 10, proxy.relayed
    assert proxy.relayed["down"] < sent / 10, proxy.relayed


async def test_python_websockets_server(nursery) -> None:
    port = await start_websockets_server(nursery)  # compression="deflate" is its default
    proxy = await start_proxy(nursery)
    extensions = await echo_through(proxy, f"ws://127.0.0.1:{port}/")
    assert extensions.startswith("permessage-deflate")
    assert "client_max_window_bits=12" in extensions  # websockets' server limits our window
    assert_compressed_both_ways(proxy)


async def test_python_websockets_server_without_context_takeover(nursery) -> None:
    factory = ServerPerMessageDeflateFactory(
        server_no_context_takeover=True, client_no_context_takeover=True
    )
    port = await start_websockets_server(nursery, extensions=[factory], compression=None)
    proxy = await start_proxy(nursery)
    extensions = await echo_through(proxy, f"ws://127.0.0.1:{port}/")
    assert "server_no_context_takeover" in extensions
    assert "client_no_context_takeover" in extensions
    assert_compressed_both_ways(proxy)


async def test_compression_none_offers_nothing(nursery) -> None:
    port = await start_websockets_server(nursery)
    proxy = await start_proxy(nursery)
    assert await echo_through(proxy, f"ws://127.0.0.1:{port}/", compression=None) == ""
    assert proxy.relayed["up"] > 2 * len(DOCUMENT)
    assert b"Sec-WebSocket-Extensions" not in proxy.requests[0]


@asynccontextmanager
async def node_server(*args: str) -> AsyncIterator[int]:
    node = require_node_ws()
    process = await trio.lowlevel.open_process(
        [node, str(NODE_SERVER), *args],
        stdout=subprocess.PIPE,
        env={**os.environ, "WS_MODULES_DIR": str(NODE_MODULES)},
    )
    try:
        assert process.stdout is not None
        output = b""
        with trio.fail_after(15):
            while not (match := re.search(rb"port (\d+)\n", output)):
                chunk = await process.stdout.receive_some()
                assert chunk, f"the Node server did not start: {output!r}"
                output += chunk
        yield int(match.group(1))
    finally:
        process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


@pytest.mark.parametrize("mode", [[], ["no-context-takeover"]])
async def test_node_ws_server(nursery, mode: list[str]) -> None:
    async with node_server(*mode) as port:
        proxy = await start_proxy(nursery)
        extensions = await echo_through(proxy, f"ws://127.0.0.1:{port}/")
    assert extensions.startswith("permessage-deflate")
    if mode:
        assert "server_no_context_takeover" in extensions
    assert_compressed_both_ways(proxy)


async def test_a_bomb_from_a_real_server_is_a_typed_error_and_1009(nursery) -> None:
    seen: list[int | None] = []
    server_done = trio.Event()

    async def bomb(connection: ServerConnection) -> None:
        await connection.send(bytes(64 << 20))  # 64 MiB of zeros, ~64 KiB compressed
        try:
            await connection.wait_closed()
        finally:
            seen.append(connection.close_code)
            server_done.set()

    server = await nursery.start(
        lambda task_status: serve(bomb, 0, host="127.0.0.1", task_status=task_status)
    )
    port = server.listeners[0].socket.getsockname()[1]
    with trio.fail_after(20), pytest.raises(tunnelws.MessageTooBigError) as info:
        async with tunnelws.open_websocket(
            f"ws://127.0.0.1:{port}/", proxy=None, max_message_size=1 << 20
        ) as ws:
            await ws.receive()
    assert info.value.code == 1009 and info.value.limit == 1 << 20
    assert info.value.exit_code == 13 and info.value.category == "message-too-big"
    assert isinstance(info.value, tunnelws.ConnectionLostError)
    with trio.fail_after(5):
        await server_done.wait()
    assert seen == [1009]  # the server was told why


async def test_origin_negotiates_and_info_shows_it(origin) -> None:
    async with tunnelws.open_websocket(origin.ws_url("/info"), proxy=None) as ws:
        info = json.loads(await ws.receive())  # type: ignore[arg-type]
        await ws.send(DOCUMENT)
        assert await ws.receive() == DOCUMENT
    assert info["offered_extensions"] == ["permessage-deflate; client_max_window_bits"]
    assert info["extensions"] == ws.extensions == "permessage-deflate"
    async with tunnelws.open_websocket(origin.ws_url("/info"), proxy=None, compression=None) as ws:
        info = json.loads(await ws.receive())  # type: ignore[arg-type]
    assert info["offered_extensions"] == [] and info["extensions"] is None


async def test_origin_with_python_websockets_client_compressing(origin) -> None:
    from websockets.trio.client import connect

    async with connect(origin.ws_url("/info"), proxy=None, max_size=None) as ws:
        info = json.loads(await ws.recv())
        await ws.send(DOCUMENT)
        assert await ws.recv() == DOCUMENT
    # websockets offers client_max_window_bits too, and the origin accepts.
    assert info["extensions"] == "permessage-deflate"
    assert ws.protocol.extensions  # the extension is active on its side


async def test_origin_bounds_what_it_inflates(nursery) -> None:
    from websockets.trio.client import connect

    from tunnelws_testnet.origin import OriginConfig, serve_origin

    addresses = await nursery.start(serve_origin, OriginConfig(max_message_size=1 << 20))
    async with connect(addresses.ws_url(), proxy=None, max_size=None) as ws:
        await ws.send(bytes(32 << 20))  # inflates to 32 times the limit
        with trio.fail_after(10):
            await ws.wait_closed()
    assert ws.close_code == 1009


async def test_cli_no_compression(origin) -> None:
    async def info_from_cli(*options: str) -> dict[str, object]:
        with trio.fail_after(30):
            result = await trio.run_process(
                [sys.executable, "-m", "tunnelws", "connect", origin.ws_url("/info"), *options],
                stdin=b"",
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env={k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")},
            )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout.splitlines()[0])  # type: ignore[no-any-return]

    assert (await info_from_cli())["extensions"] == "permessage-deflate"
    info = await info_from_cli("--no-compression")
    assert info["extensions"] is None and info["offered_extensions"] == []


async def test_server_pings_are_answered_while_nobody_receives(nursery) -> None:
    # The background reader takes over when no receive() is waiting.
    port = await start_websockets_server(nursery, ping_interval=0.1, ping_timeout=0.5)
    async with tunnelws.open_websocket(f"ws://127.0.0.1:{port}/", proxy=None) as ws:
        await trio.sleep(1.5)  # three ping timeouts' worth without a receive()
        await ws.send("still here")
        assert await ws.receive() == "still here"
