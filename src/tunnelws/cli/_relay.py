"""What ``forward`` and ``local-proxy`` share: waiting for a stop signal."""

from __future__ import annotations

import signal

import trio

__all__ = ["until_stop_signal"]


async def until_stop_signal() -> None:
    """Return at the first SIGINT or SIGTERM (servers then stop cleanly, exit 0)."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return
