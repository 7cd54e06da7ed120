"""``tunnelws connect`` as a user runs it: a real subprocess, stdin lines in,
echoes out, and every exit code of the error taxonomy produced for real."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys

import pytest
import trio

from scripted_proxy import ScriptedProxy, Step

CLI = [sys.executable, "-m", "tunnelws"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and k != "CI"}
    env.update(extra)
    return env


async def run_cli(
    *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(30):
        return await trio.run_process(
            [*CLI, *args],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env or clean_env(),
        )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_proxy(nursery: trio.Nursery, *steps: Step) -> ScriptedProxy:
    proxy = ScriptedProxy(list(steps) or [Step()])
    await nursery.start(proxy.serve)
    return proxy


async def test_lines_in_echoes_out_through_a_tunnel(nursery, origin) -> None:
    proxy = await start_proxy(nursery)
    result = await run_cli(
        "connect", origin.ws_url(), "--proxy", proxy.url, stdin=b"one\ntwo\nthree\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines() == ["one", "two", "three"]
    assert len(proxy.requests) == 1


async def test_verbose_shows_exchange_but_no_password(nursery, origin) -> None:
    proxy = await start_proxy(nursery)
    result = await run_cli(
        "connect",
        origin.ws_url(),
        "--proxy",
        f"http://alice:hunter2@127.0.0.1:{proxy.port}",
        "-v",
        stdin=b"x\n",
    )
    err = result.stderr.decode()
    assert result.returncode == 0, err
    assert f"> CONNECT 127.0.0.1:{origin.http[1]} HTTP/1.1" in err
    assert "< HTTP/1.1 200 Connection established" in err
    assert "Proxy-Authorization: Basic ***" in err
    assert "hunter2" not in err and "aHVudGVyMg" not in err  # nor its base64


async def test_wss_with_cacert(origin, test_ca) -> None:
    result = await run_cli(
        "connect",
        origin.wss_url(),
        "--no-proxy",
        "--cacert",
        str(test_ca.ca_pem_path),
        stdin=b"secure\n",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"secure\n"


EXIT_CASES = {
    # name: (exit code, text the one-line message must contain)
    "usage": (2, "unsupported URL scheme"),
    "config": (3, "https_proxy"),
    "direct-connect": (4, "Connection refused"),
    "proxy-connect": (5, "cannot connect to proxy"),
    "proxy-auth": (6, "407"),
    "proxy-refused": (7, "403"),
    "proxy-protocol": (8, "not HTTP"),
    "tls": (9, "could not be verified"),
    "handshake": (10, "404"),
    "timeout": (11, "timed out"),
}


@pytest.mark.parametrize("case", sorted(EXIT_CASES))
async def test_exit_codes(nursery, origin, case) -> None:
    code, text = EXIT_CASES[case]
    ws_url = origin.ws_url()
    env = None
    args: list[str]
    if case == "usage":
        args = ["ftp://example.com/"]
    elif case == "config":
        env = clean_env(https_proxy="gopher://proxy.example:70")
        args = [f"wss://origin.example:{origin.https[1]}/echo"]
    elif case == "direct-connect":
        args = [f"ws://127.0.0.1:{closed_port()}/echo", "--no-proxy"]
    elif case == "proxy-connect":
        args = [ws_url, "--proxy", f"http://127.0.0.1:{closed_port()}"]
    elif case == "tls":
        args = [origin.wss_url(), "--no-proxy"]
    elif case == "handshake":
        args = [origin.ws_url("/missing"), "--no-proxy"]
    else:
        step = {
            "proxy-auth": Step(
                reply=b"HTTP/1.1 407 Auth\r\nProxy-Authenticate: Basic realm=x\r\n"
                b"Content-Length: 0\r\n\r\n",
                then="next",
            ),
            "proxy-refused": Step(reply=b"HTTP/1.1 403 Forbidden\r\n\r\n", then="close"),
            "proxy-protocol": Step(reply=b"\x16\x03\x01garbage\r\n\r\n", then="close"),
            "timeout": Step(reply=b"", then="silent"),
        }[case]
        proxy = await start_proxy(nursery, step)
        args = [ws_url, "--proxy", proxy.url, "--connect-timeout", "0.5"]
    result = await run_cli("connect", *args, stdin=b"x\n", env=env)
    err = result.stderr.decode()
    assert result.returncode == code, err
    assert text in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


async def test_exit_12_when_the_tunnel_drops_after_open(nursery, origin) -> None:
    proxy = ScriptedProxy([Step()])
    proxy_scope = trio.CancelScope()

    async def run_proxy(*, task_status: trio.TaskStatus[ScriptedProxy]) -> None:
        with proxy_scope:
            await proxy.serve(task_status=task_status)

    await nursery.start(run_proxy)
    process = await trio.lowlevel.open_process(
        [*CLI, "connect", origin.ws_url(), "--proxy", proxy.url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
    )
    assert process.stdin and process.stdout and process.stderr
    try:
        with trio.fail_after(20):
            await process.stdin.send_all(b"before\n")
            assert await process.stdout.receive_some() == b"before\n"
            proxy_scope.cancel()  # the proxy's relay dies: the tunnel is reset
            code = await process.wait()
        err = (await process.stderr.receive_some()).decode()
    finally:
        process.kill()
        await process.stdin.aclose()
    assert code == 12, err
    assert "connection lost" in err


async def _idle_session(nursery: trio.Nursery, origin, *ping: str) -> tuple[int, bytes, str]:
    """One message, 1.2 s of silence on stdin behind a proxy that drops
    tunnels idle for 0.5 s, then another: (exit code, stdout, stderr)."""
    proxy = await start_proxy(nursery, Step(idle_timeout=0.5))
    process = await trio.lowlevel.open_process(
        [*CLI, "connect", origin.ws_url(), "--proxy", proxy.url, *ping],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
    )
    assert process.stdin and process.stdout and process.stderr
    out = b""
    try:
        with trio.fail_after(20):
            await process.stdin.send_all(b"before\n")
            out = await process.stdout.receive_some()
            await trio.sleep(1.2)
            with contextlib.suppress(trio.BrokenResourceError):
                await process.stdin.send_all(b"after\n")
            await process.stdin.aclose()
            while chunk := await process.stdout.receive_some():
                out += chunk
            code = await process.wait()
        err = b""
        while chunk := await process.stderr.receive_some():
            err += chunk
    finally:
        process.kill()
    return code, out, err.decode()


async def test_ping_interval_keeps_an_idle_tunnel_and_0_turns_pings_off(nursery, origin) -> None:
    code, out, err = await _idle_session(nursery, origin, "--ping-interval", "0.15")
    assert (code, out) == (0, b"before\nafter\n"), err
    code, out, err = await _idle_session(nursery, origin, "--ping-interval", "0")
    assert code == 12 and out == b"before\n", err
    assert "connection lost" in err


async def test_ping_interval_default_is_20_seconds_and_rejects_negatives() -> None:
    result = await run_cli("connect", "--help")
    assert "default 20; 0: no pings" in " ".join(result.stdout.decode().split())
    result = await run_cli("connect", "ws://127.0.0.1:9/", "--ping-interval", "-1")
    assert result.returncode == 2
    assert "must be 0 (off) or a positive number" in result.stderr.decode()
