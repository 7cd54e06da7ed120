"""Step 10, after a broken native step: does tunnelws's HTTP fallback carry
the WebSocket here, streaming or long-polling, and how fast?

It runs only where the fallback can get around the failure (the one rule of
``_fallback_policy``), with the client itself (``open_websocket(...,
fallback="only")``) along the route the walk chose. Its result is a step of
its own; when it works, the broken step's remedy says so first.
"""

from __future__ import annotations

import statistics
from dataclasses import replace

import trio

from .._errors import TunnelError
from .._fallback_policy import fallback_may_help
from .._websocket import open_websocket
from ._report import Diagnosis, StepResult, StepStatus
from ._state import Walk

__all__ = ["ROUND_TRIPS", "fallback", "fallback_applies", "with_fallback_remedy"]

ROUND_TRIPS = 5
#: Time to settle the downstream mode: the buffering detection's 3 s, and some.
SETTLE_TIMEOUT = 5.0


def fallback_applies(walk: Walk, failure: StepResult | None) -> bool:
    """Whether the step broken natively is one the fallback may get around."""
    if failure is None or failure.diagnosis is None or walk.blocked is None:
        return False
    if walk.options.connect_to is not None and walk.proxy is None:
        return False  # the fallback's requests would go to the URL's host instead
    category, status = walk.blocked
    return fallback_may_help(category, status, secure=walk.target.secure)


async def fallback(walk: Walk) -> tuple[StepStatus, str, Diagnosis | None]:
    """Open a fallback session, let the downstream mode settle, measure
    :data:`ROUND_TRIPS` echoes."""
    timeout = walk.timeout + SETTLE_TIMEOUT + walk.options.message_timeout
    latencies: list[float] = []
    mode: str | None = None
    error: str | None = None
    with trio.move_on_after(timeout) as scope:
        try:
            async with open_websocket(
                walk.target.url, route=walk.chosen_route(quiet=True), fallback="only"
            ) as ws:
                session = ws._transport
                settled = getattr(session, "mode_settled", None)
                if settled is not None:
                    with trio.move_on_after(SETTLE_TIMEOUT):
                        await settled.wait()
                for number in range(ROUND_TRIPS):
                    sent_at = trio.current_time()
                    await ws.send(f"tunnelws check fallback {number}")
                    await ws.receive()
                    latencies.append(trio.current_time() - sent_at)
                mode = ws.fallback_mode
        except TunnelError as exc:
            error = f"{exc.category}: {exc}"
    if scope.cancelled_caught:
        error = f"no answer within {timeout:g} s"
    if error is not None or mode is None:
        walk.details.append(f"the fallback failed: {error}")
        return (
            "fail",
            "the HTTP fallback does not work here either",
            Diagnosis(
                "handshake",
                "fallback-failed",
                f"the HTTP fallback does not pass either: {error}",
                "the path blocks plain HTTP requests to the server too, or the server offers"
                " no fallback (tunnelws serve and tunnelws gateway do)",
            ),
        )
    median = statistics.median(latencies) * 1000
    walk.fallback_works = f"{mode}, round trip {median:.1f} ms"
    walk.details.append(
        f"downstream {mode}; round trips: " + ", ".join(f"{t * 1000:.1f}" for t in latencies)
    )
    return "ok", f"works: {mode}, round trip median {median:.1f} ms ({ROUND_TRIPS} echoes)", None


def with_fallback_remedy(diagnosis: Diagnosis, works: str) -> Diagnosis:
    """The broken step's diagnosis, its remedy leading with the fallback."""
    return replace(
        diagnosis,
        remedy=f"tunnelws works here through its HTTP fallback ({works}): open_websocket and"
        " tunnelws connect use it by themselves (fallback='auto'); for a native WebSocket: "
        + diagnosis.remedy,
    )
