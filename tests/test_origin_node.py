"""The origin test server with Node's `ws`, a third-party client users run
(installed by `make test` from proxy/adapters/node_ws's lockfile)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import trio

from conftest import require_binary, skip_or_fail

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / "proxy" / "adapters" / "node_ws" / "node_modules"
SCRIPT = Path(__file__).resolve().parent / "node" / "origin_check.mjs"


async def test_node_ws_echo_subprotocol_close_and_16_mib(origin) -> None:
    node = require_binary("node")
    if not (NODE_MODULES / "ws").is_dir():
        skip_or_fail(
            "Node `ws` is not installed: run `make test` (npm ci in proxy/adapters/node_ws)"
        )
    env = {**os.environ, "WS_MODULES_DIR": str(NODE_MODULES)}
    with trio.fail_after(60):
        result = await trio.run_process(
            [node, str(SCRIPT), origin.ws_url("")],
            capture_stdout=True,
            capture_stderr=True,
            env=env,
            check=False,
        )
    assert result.returncode == 0, result.stderr.decode()
    seen = json.loads(result.stdout)
    assert seen["subprotocol"] == "chat.v2"
    assert seen["text"] == {"data": "hello from node", "binary": False}
    assert seen["binary"] == {"data": [0, 1, 2, 255], "binary": True}
    assert seen["big"] == {"length": 16 * 1024 * 1024, "same": True}
    assert seen["close"] == {"code": 4321, "reason": "node says bye"}
