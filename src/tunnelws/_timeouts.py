"""One time budget for opening a connection, spent phase by phase.

``connect_timeout`` means "connected, or a clear error, within this many
seconds", whatever mix of TCP, CONNECT, TLS and upgrade the route needs. When
the budget runs out, the error names the phase that was running, which is what
a user behind a silent proxy needs to know.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import trio

from ._errors import PhaseTimeoutError

__all__ = ["PhaseClock"]


class PhaseClock:
    def __init__(self, timeout: float) -> None:
        if timeout <= 0:
            raise ValueError(f"connect_timeout must be positive, not {timeout!r}")
        self.timeout = timeout
        self.deadline = trio.current_time() + timeout

    @contextmanager
    def phase(self, phase: str, doing: str) -> Iterator[None]:
        """Run the body within the remaining budget; on expiry raise
        :class:`PhaseTimeoutError` saying what was being done."""
        with trio.move_on_at(self.deadline) as scope:
            yield
        if scope.cancelled_caught:
            raise PhaseTimeoutError(
                f"timed out after {self.timeout:g} s {doing}", phase=phase, timeout=self.timeout
            )
