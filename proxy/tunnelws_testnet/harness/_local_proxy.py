"""Run a client *through* ``tunnelws local-proxy`` (``harness run --through-local-proxy``).

The local proxy starts in the client's namespace with the scenario's
environment: the proxy variables, PAC URL, credentials, CA bundle and Kerberos
ticket that a user's shell would hold. It runs at its defaults. The client then
gets none of that: only ``http_proxy``/``https_proxy`` (both cases) pointing at
the local proxy, and the CA bundle, because TLS to the origin stays end to end.
The scenario judges the pair: what the network sees is what the local proxy
does on the client's behalf, and a client that ignores those two variables
shows up as exactly that (a direct attempt, or a DNS query, and no entry in the
local proxy's log).
"""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from ..peers import json_records
from ._netns import kill_pids
from ._network import (
    PROXY_VARIABLES,
    NetworkStartError,
    RunningNetwork,
    read_text,
    spawn_in_namespace,
    wait_for_line,
)

__all__ = ["CLIENT_PROXY_VARIABLES", "LocalProxyRun", "local_proxy"]

# What the client is given, all pointing at the local proxy.
CLIENT_PROXY_VARIABLES = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")
# Kept for the client: its trust in the origin's (or an intercepting proxy's) CA.
_CA_VARIABLES = frozenset(
    {"SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE"}
)
STOP_GRACE = 2.0
_LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")


@dataclass
class LocalProxyRun:
    """One local proxy in front of one scenario's network."""

    url: str | None = None  # where it listens; None when it did not start
    failure: str | None = None  # why it did not start, with its output's tail
    exit_code: int | None = None  # its status when it did not start
    client_env: dict[str, str] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)  # its --log, one entry per connection
    output: str = ""


def client_environment(scenario_env: dict[str, str], url: str) -> dict[str, str]:
    """The scenario's environment without its route (proxy variables, PAC,
    Kerberos), with ``http_proxy``/``https_proxy`` set to ``url``."""
    env = {
        key: value
        for key, value in scenario_env.items()
        if key not in PROXY_VARIABLES or key in _CA_VARIABLES
    }
    env.update(dict.fromkeys(CLIENT_PROXY_VARIABLES, url))
    return env


def command(log_path: Path) -> list[str]:
    """``tunnelws local-proxy`` at its defaults, on a free loopback port, logging."""
    return [
        sys.executable,
        "-u",
        "-m",
        "tunnelws",
        "local-proxy",
        "--listen",
        "127.0.0.1:0",
        "--log",
        str(log_path),
    ]


@asynccontextmanager
async def local_proxy(network: RunningNetwork) -> AsyncIterator[LocalProxyRun]:
    """Start ``tunnelws local-proxy`` in the client namespace; on exit stop it
    (SIGTERM, then SIGKILL after a grace) and read its log."""
    output_path = network.directory / "local-proxy.out"
    log_path = network.directory / "local-proxy.jsonl"
    run = LocalProxyRun()
    process = await spawn_in_namespace(
        network.topology,
        network.topology.client,
        command(log_path),
        output_path,
        [],
        env=network.client_env,
    )
    try:
        try:
            await wait_for_line(process, output_path, "listening on", "tunnelws local-proxy")
        except NetworkStartError as exc:
            # The pair fails before the client starts: judged, not a harness error.
            run.exit_code = process.returncode or 1
            run.failure = str(exc)
        else:
            match = _LISTENING.search(read_text(output_path))
            assert match is not None  # its first line says where it listens
            run.url = match.group(1)
            run.client_env = client_environment(network.client_env, run.url)
        yield run
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(kill_pids, [process.pid], STOP_GRACE)
            with trio.move_on_after(1):
                await process.wait()
        run.output = read_text(output_path)
        run.log = json_records(read_text(log_path))
