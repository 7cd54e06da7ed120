"""A small run of benchmarks/scale.py's client measurement (the real one opens
10,000 WebSockets and is not part of the suite): 50 tunnelled WebSockets with
compression through two pproxy processes, then waves of them, and every
descriptor comes back."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import scale  # benchmarks/ is not a package


async def test_fifty_connections_open_close_and_leave_no_descriptor() -> None:
    args = SimpleNamespace(connections=50, concurrency=10, waves=2)
    with trio.fail_after(90):
        async with scale.network() as (origin, proxies):
            result = await scale.run_client("tunnelws", True, origin, proxies, args)
    assert result["failed"] == 0
    assert result["fds_open"] == result["fds_before"] + 50
    assert result["fds_closed"] == result["fds_before"]
    assert result["fds_after_waves"] == result["fds_before"]
    assert 0 < result["kib_per_connection"] < 500
