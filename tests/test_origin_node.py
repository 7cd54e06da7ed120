"""The origin test server with Node's `ws`, a third-party client users run
(installed by `make test` from proxy/adapters/node_ws's lockfile)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import trio

from conftest import NODE_MODULES, require_node_ws

SCRIPT = Path(__file__).resolve().parent / "node" / "origin_check.mjs"


async def test_node_ws_echo_subprotocol_deflate_close_and_16_mib(origin) -> None:
    node = require_node_ws()
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
    assert seen["extensions"] == "permessage-deflate"  # the 16 MiB went compressed
    assert seen["text"] == {"data": "hello from node", "binary": False}
    assert seen["binary"] == {"data": [0, 1, 2, 255], "binary": True}
    assert seen["big"] == {"length": 16 * 1024 * 1024, "same": True}
    assert seen["close"] == {"code": 4321, "reason": "node says bye"}
