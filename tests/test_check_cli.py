"""``tunnelws check`` as a command: the readable report, ``--json``, exit
codes from the taxonomy, and no credentials anywhere in its output."""

from __future__ import annotations

import json
import subprocess
import sys

import trio

from tunnelws_testnet.companion import ProxyConfig, serve_proxy
from tunnelws_testnet.origin import LocalCA, OriginAddresses

PASSWORD = "pa55:w@rd/secret"


async def _tunnelws(*args: str) -> subprocess.CompletedProcess[str]:
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, "-m", "tunnelws", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
    )


async def test_report_for_a_port_refusal(nursery: trio.Nursery, origin: OriginAddresses) -> None:
    proxy = await nursery.start(serve_proxy, ProxyConfig(allow_ports=frozenset({443})))
    result = await _tunnelws("check", origin.ws_url(), "--proxy", proxy.url)
    assert result.returncode == 7, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"tunnelws check {origin.ws_url()}"
    assert lines[1].startswith("✔ 1 route")
    assert any(line.startswith("✘ 4 CONNECT") and "403" in line for line in lines)
    assert "the proxy allows CONNECT only to 443" in result.stdout
    assert "Remedy: use wss:// on port 443" in result.stdout


async def test_json_and_no_credentials_with_verbose(
    nursery: trio.Nursery, origin: OriginAddresses
) -> None:
    proxy = await nursery.start(serve_proxy, ProxyConfig(auth=("alice", "right")))
    result = await _tunnelws(
        "check",
        origin.ws_url(),
        "--proxy",
        proxy.url,
        "--proxy-user",
        f"alice:{PASSWORD}",
        "--json",
        "-v",
    )
    assert result.returncode == 6
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["exit_code"] == 6
    assert report["failed_step"] == "connect"
    assert report["steps"][-1]["diagnosis"]["cause"] == "auth-rejected"
    assert "Proxy-Authorization: Basic ***" in result.stderr  # the -v trace
    for secret in (PASSWORD, "pa55"):
        assert secret not in result.stdout + result.stderr


async def test_success_with_cacert_and_idle(
    nursery: trio.Nursery, origin: OriginAddresses, test_ca: LocalCA
) -> None:
    proxy = await nursery.start(serve_proxy, ProxyConfig())
    result = await _tunnelws(
        "check",
        origin.wss_url(),
        "--proxy",
        proxy.url,
        "--cacert",
        str(test_ca.ca_pem_path),
        "--idle",
        "0.3",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "✔ 5 TLS" in result.stdout
    assert "tunnel survived 0.3 s idle without pings" in result.stdout
    assert "Result: the path works (exit 0)." in result.stdout
    assert "✘" not in result.stdout


async def test_not_a_websocket_url_is_a_usage_error() -> None:
    result = await _tunnelws("check", "http://example.test/")
    assert result.returncode == 2
    assert "not a WebSocket URL" in result.stderr
