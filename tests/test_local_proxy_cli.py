"""``tunnelws local-proxy`` as a command: the password given through the
environment stays out of ``ps``, stdout, stderr (even with -v), the JSON log
and what the origin receives; SIGTERM stops it cleanly."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import trio

from companion_support import run_curl, start_origin, start_proxy
from conftest import require_binary

PASSWORD = "cli-secret-271828"


async def test_password_never_shows(nursery: trio.Nursery, tmp_path: Path) -> None:
    ps = require_binary("ps")
    origin = await start_origin(nursery)
    upstream = await start_proxy(nursery, auth=("alice", PASSWORD))  # Basic: the worst case
    log = tmp_path / "local-proxy.jsonl"
    process = await trio.lowlevel.open_process(
        [
            *(sys.executable, "-m", "tunnelws", "local-proxy"),
            *("--listen", "127.0.0.1:0", "--proxy", upstream.url, "--proxy-user", "alice"),
            *("-v", "--log", str(log)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "TUNNELWS_PROXY_PASSWORD": PASSWORD},
    )
    assert process.stdout is not None and process.stderr is not None
    stdout = stderr = b""

    async def collect_stderr() -> None:
        nonlocal stderr
        assert process.stderr is not None
        while chunk := await process.stderr.receive_some():
            stderr += chunk

    try:
        nursery.start_soon(collect_stderr)
        with trio.fail_after(15):
            while not (match := re.search(rb"listening on (http://\S+)", stdout)):
                chunk = await process.stdout.receive_some()
                assert chunk, stderr
                stdout += chunk
        url = match.group(1).decode()
        for args in ((), ("-p",)):
            result = await run_curl(*args, "-x", url, origin.http_url)
            assert result.returncode == 0, result.stderr
        listing = await trio.run_process([ps, "-eo", "args"], capture_stdout=True)
        assert b"local-proxy" in listing.stdout and PASSWORD.encode() not in listing.stdout
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            assert await process.wait() == 0
            stdout += await process.stdout.receive_some() or b""
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    encoded = base64.b64encode(f"alice:{PASSWORD}".encode())
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["method"] for r in records] == ["GET", "CONNECT"]
    assert all(r["status"] == 200 and r["route"] == upstream.url for r in records)
    assert b"Proxy-Authorization: Basic ***" in stderr  # -v shows the exchange, redacted
    for text in (stdout, stderr, log.read_bytes(), json.dumps(origin.requests).encode()):
        assert PASSWORD.encode() not in text and encoded not in text
    assert upstream.stats.auth_rejected == 0  # the password did reach the proxy


async def test_without_a_password_and_no_terminal_it_says_how(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TUNNELWS_PROXY_PASSWORD"}
    result = await trio.run_process(
        [
            sys.executable,
            "-m",
            "tunnelws",
            "local-proxy",
            "--listen",
            "127.0.0.1:0",
            "--proxy",
            "http://127.0.0.1:9",
            "--proxy-user",
            "alice",
        ],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=env,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # no controlling terminal to prompt on
    )
    assert result.returncode == 2
    assert b"TUNNELWS_PROXY_PASSWORD" in result.stderr


async def test_a_bad_proxy_variable_is_one_line_and_its_exit_code(tmp_path: Path) -> None:
    """The upstream is resolved while the server starts inside a nursery: the
    typed error still becomes exit 3 and one line, not a traceback."""
    env = {**os.environ, "https_proxy": "bogus://proxy.corp:8080"}
    result = await trio.run_process(
        [sys.executable, "-m", "tunnelws", "local-proxy", "--listen", "127.0.0.1:0"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 3
    assert result.stderr.decode().splitlines() == [
        "tunnelws: config: invalid proxy URL in https_proxy ('bogus://proxy.corp:8080'): "
        "unsupported proxy scheme 'bogus' (supported: http://, https://, socks5://, socks5h://)"
    ]
