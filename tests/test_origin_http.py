"""Plain HTTP paths, bad input and resource limits of the origin server."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import trio
import websocket  # websocket-client

from origin_support import get_request, raw_exchange, running_origin, status_of

UPGRADE = (
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
)


async def test_page_config_and_info_over_plain_get() -> None:
    async with running_origin() as origin:
        page = await raw_exchange(origin.http, get_request("/", "Connection: close"))
        config = await raw_exchange(origin.http, get_request("/config", "Connection: close"))
        info = await raw_exchange(
            origin.http, get_request("/info", "X-Added-By: test", "Connection: close")
        )
        head = await raw_exchange(
            origin.http, b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
    assert status_of(page) == 200 and b"text/html" in page and b"<script>" in page
    assert json.loads(config.partition(b"\r\n\r\n")[2])["http_port"] == origin.http[1]
    described = json.loads(info.partition(b"\r\n\r\n")[2])
    assert described["headers"][:2] == [["Host", "origin.test"], ["X-Added-By", "test"]]
    assert described["tls"] is False and described["websocket"] is False
    assert status_of(head) == 200 and head.endswith(b"\r\n\r\n")  # headers only


async def test_keep_alive_serves_several_requests() -> None:
    async with running_origin() as origin:
        both = get_request("/config") + get_request("/info", "Connection: close")
        response = await raw_exchange(origin.http, both)
    assert response.count(b"HTTP/1.1 200 OK") == 2


async def test_errors() -> None:
    async with running_origin() as origin:
        cases = {
            "unknown path": (get_request("/nope"), 404),
            "echo without upgrade": (get_request("/echo"), 426),
            "wrong websocket version": (
                get_request("/echo", *UPGRADE, "Sec-WebSocket-Version: 8"), 426,
            ),
            "bad key": (
                get_request("/echo", "Upgrade: websocket", "Connection: Upgrade",
                            "Sec-WebSocket-Key: short", "Sec-WebSocket-Version: 13"), 400,
            ),
            "post": (b"POST /info HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405),
            "malformed": (b"GARBAGE\r\n\r\n", 400),
            "bad header line": (b"GET / HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n", 400),
            "oversized head": (get_request("/", "X-Big: " + "a" * 20000), 431),
        }
        for name, (request, expected) in cases.items():
            response = await raw_exchange(origin.http, request)
            assert status_of(response) == expected, name
            body = response.partition(b"\r\n\r\n")[2]
            assert body.strip(), f"{name}: the error is explained"
            assert re.search(rb"(?im)^connection:.*\bclose\b", response), name
    upgrade_required = await _exchange_once(get_request("/echo"))
    assert b"Upgrade: websocket" in upgrade_required
    assert b"Sec-WebSocket-Version: 13" in upgrade_required


async def _exchange_once(request: bytes) -> bytes:
    async with running_origin() as origin:
        return await raw_exchange(origin.http, request)


async def test_slow_and_idle_clients_are_dropped() -> None:
    async with running_origin(request_timeout=0.3) as origin:
        with trio.fail_after(5):
            stream = await trio.open_tcp_stream(*origin.http)
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: sl")  # never finished
            partial = await stream.receive_some(1000)
            assert status_of(partial) == 408
            idle = await trio.open_tcp_stream(*origin.http)
            assert await idle.receive_some(1000) == b""  # closed quietly, no response
        await stream.aclose()
        await idle.aclose()


async def test_client_that_never_reads_cannot_make_the_server_buffer() -> None:
    """Echoes wait for the client to read; after send_timeout it is dropped.

    The client keeps sending 1 MiB messages and never reads. If the server
    kept reading and queueing echoes, the client could send without bound; with
    backpressure the client's own sends stall and then the server hangs up.
    """
    # One masked binary frame (all-zero mask), 1 MiB payload.
    frame = b"\x82\xff" + (1 << 20).to_bytes(8, "big") + b"\0\0\0\0" + b"x" * (1 << 20)
    async with running_origin(send_timeout=0.5) as origin:
        stream = await trio.open_tcp_stream(*origin.http)
        await stream.send_all(get_request("/echo", *UPGRADE, "Sec-WebSocket-Version: 13"))
        sent = 0
        with trio.move_on_after(10) as overall:
            try:
                while True:
                    with trio.fail_after(3):
                        await stream.send_all(frame)
                    sent += len(frame)
            except (trio.BrokenResourceError, trio.TooSlowError):
                pass
        assert not overall.cancelled_caught
        # Kernel buffers hold a few MiB at most; an unbounded server would take far more.
        assert sent < 64 << 20, sent
        await stream.aclose()


def test_cli_serves_tls_with_a_generated_ca_and_exits_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "tunnelws", "serve", "--port", "0", "--tls-port", "0",
         "--ca-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert process.stdout is not None
        banner = []
        for _ in range(20):
            line = process.stdout.readline()
            banner.append(line)
            if line.startswith("Press Ctrl-C") or not line:
                break
        text = "".join(banner)
        wss_url = next(word for word in text.split() if word.startswith("wss://"))
        assert str(tmp_path / "ca.pem") in text
        ws = websocket.create_connection(
            wss_url, timeout=5, sslopt={"ca_certs": str(tmp_path / "ca.pem")},
            http_no_proxy=["*"],
        )
        ws.send("through the CLI")
        assert ws.recv() == "through the CLI"
        ws.close()
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert "Traceback" not in stderr and "stopped" in stdout


def test_cli_rejects_cert_without_key() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tunnelws", "serve", "--tls-port", "0", "--cert", "x.pem"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert "--cert and --key go together" in result.stderr
