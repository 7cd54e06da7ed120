"""Starting a benchmark's origin in its own process (the proxies come from
tunnelws_testnet.peers)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

__all__ = ["spawn"]


@asynccontextmanager
async def spawn(args: list[str], ready: re.Pattern[bytes]) -> AsyncIterator[re.Match[bytes]]:
    """Run ``args`` until the block ends; wait (15 s at most) for its output
    to match ``ready`` (e.g. the line naming its port) and yield the match."""
    process = await trio.lowlevel.open_process(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        assert process.stdout is not None
        output = b""
        with trio.fail_after(15):
            while not (match := ready.search(output)):
                chunk = await process.stdout.receive_some()
                if not chunk:
                    raise RuntimeError(f"{args} did not start: {output!r}")
                output += chunk
        yield match
    finally:
        process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
