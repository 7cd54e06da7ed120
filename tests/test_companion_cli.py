"""``tunnelws proxy``: profiles, option overrides, output, clean Ctrl-C."""

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

from companion_support import run_curl, start_origin
from tunnelws.cli import build_parser
from tunnelws_testnet.cli.proxy import build_config
from tunnelws_testnet.companion import PROFILES


def config_for(*argv: str):  # type: ignore[no-untyped-def]
    return build_config(build_parser().parse_args(["proxy", *argv]))


def test_options_override_only_their_part_of_a_profile() -> None:
    config = config_for("--profile", "strict-corporate", "--idle-timeout", "5", "--auth", "a:b")
    base = PROFILES["strict-corporate"].config
    assert config.toxics.idle_timeout == 5 and config.auth == ("a", "b")
    assert config.allow_ports == base.allow_ports == frozenset({443})
    assert config.auth_scheme == "basic" and config.strip_upgrade
    assert config_for("--profile", "squid-default", "--any-port").allow_ports is None
    flaky = config_for("--profile", "flaky", "--latency", "0.2", "--slice", "2:8")
    assert (flaky.toxics.latency_up, flaky.toxics.latency_down) == (0.2, 0.2)
    assert (flaky.toxics.slice_min, flaky.toxics.slice_max, flaky.toxics.seed) == (2, 8, 1)
    quirky = config_for("--quirk", "http10", "--quirk", "dribble", "--reply-status", "502")
    assert quirky.quirks.http10 and quirky.quirks.dribble and quirky.quirks.reply_status == 502
    assert "s3cr3t" not in repr(config_for("--auth", "user:s3cr3t"))


def test_bad_options_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["proxy", "--allow-ports", "443,x"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["proxy", "--listen", "nowhere"])
    args = build_parser().parse_args(["proxy", "--quirk", "sparkles"])
    assert args.handler(args) == 2
    assert "unknown quirk" in capsys.readouterr().err


@asynccontextmanager
async def cli_proxy(*argv: str) -> AsyncIterator[tuple[list[str], trio.Process]]:
    """Run ``tunnelws proxy`` and yield its first output lines; Ctrl-C on exit."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tunnelws", "proxy", "--listen", "127.0.0.1:0", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        output = b""
        wanted = 2 if "--intercept" in argv or "intercepting" in argv else 1
        with trio.fail_after(10):
            while output.count(b"\n") < wanted:
                chunk = await process.stdout.receive_some(4096)
                assert chunk, "tunnelws proxy exited early"
                output += chunk
        yield output.decode().splitlines(), process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            with trio.move_on_after(5):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


async def test_cli_serves_until_ctrl_c_and_exits_zero(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    origin = await start_origin(nursery)
    log = tmp_path / "log.jsonl"
    async with cli_proxy(
        "--profile",
        "squid-default",
        "--auth",
        "u:pw",
        "--auth-scheme",
        "digest",
        "--log",
        str(log),
    ) as (lines, process):
        url = lines[0].removeprefix("tunnelws proxy listening on ")
        assert url.startswith("http://127.0.0.1:")
        refused = await run_curl(
            "-p", "-x", url, "--proxy-user", "u:pw", "--proxy-digest", origin.http_url
        )
        assert b"403" in refused.stderr  # squid-default: CONNECT only to 443
        process.send_signal(signal.SIGINT)
        with trio.fail_after(5):
            assert await process.wait() == 0
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["status"] for e in events] == [407, 403]
    assert events[1]["user"] == "u" and "pw" not in log.read_text()
    async with cli_proxy("--profile", "squid-default") as (lines, _):
        url = lines[0].removeprefix("tunnelws proxy listening on ")
        # Like squid: forwarded requests go to any Safe_port (1025-65535 too).
        assert (await run_curl("-x", url, origin.http_url)).returncode == 0


async def test_cli_intercepting_profile_prints_the_ca(tmp_path: Path) -> None:
    async with cli_proxy("--profile", "intercepting", "--ca-dir", str(tmp_path)) as (lines, _):
        assert lines[1] == f"interception CA certificate: {tmp_path / 'tunnelws-proxy-ca.pem'}"
        assert (tmp_path / "tunnelws-proxy-ca.pem").read_text().startswith("-----BEGIN CERT")
