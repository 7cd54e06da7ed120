"""The walk: run the steps in order, time each, stop at the first broken one.

Every step records plain observations and hands them to the pure rules in
``_diagnose``. The steps (``_path_steps``, ``_websocket_steps``) rebuild the
connection path from the transport's building blocks because a diagnosis
needs more than the client keeps: each CONNECT reply, the certificate that
could not be verified, the raw upgrade reply.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import trio

from .._target import parse_target
from . import _path_steps as path
from . import _websocket_steps as websocket
from ._fallback_step import fallback, fallback_applies, with_fallback_remedy
from ._report import CheckReport, StepResult
from ._state import CheckOptions, Outcome, StepFailed, Walk

__all__ = ["CheckOptions", "run_check"]

Step = Callable[[Walk], Awaitable[Outcome]]

STEPS: Sequence[tuple[str, Step]] = (
    ("route", path.route),
    ("dns", path.resolve_names),
    ("tcp", path.tcp),
    ("connect", path.connect),
    ("tls", path.tls),
    ("upgrade", websocket.upgrade),
    ("echo", websocket.echo),
    ("idle", websocket.idle),
    ("sse", websocket.sse),
)
# After a broken native step, when the fallback may get around it:
# ("fallback", _fallback_step.fallback), see run_check.


async def run_check(
    url: str,
    options: CheckOptions | None = None,
    *,
    on_step: Callable[[StepResult], None] | None = None,
) -> CheckReport:
    """Walk the path to the WebSocket ``url`` and diagnose the first broken step.

    ``url`` should be an echo endpoint (``tunnelws serve``'s ``/echo``): the
    message steps expect their messages back. ``on_step`` is called with each
    step's result as soon as it is known. When a native step breaks in a way
    the HTTP fallback can get around, a last step tries the fallback; when it
    works, the broken step's remedy says so (the exit code stays the broken
    step's: the report is about the WebSocket path). Raises :class:`ValueError` for a URL
    that is not ``ws://`` or ``wss://``; every network problem is a step
    result, never an exception.
    """
    target = parse_target(url)
    if target.scheme not in ("ws", "wss"):
        raise ValueError(f"not a WebSocket URL: {url!r} (use ws:// or wss://)")
    walk = Walk(target, options or CheckOptions())
    report = CheckReport(target.url)
    try:
        for name, step in STEPS:
            result = await _timed(walk, name, step)
            if result is None:
                continue
            report.steps.append(result)
            if on_step is not None:
                on_step(result)
            if result.status == "fail":
                break
        failure = report.failure
        if fallback_applies(walk, failure):
            # The native path is broken in a way plain HTTP may get around.
            if walk.stream is not None:
                await trio.aclose_forcefully(walk.stream)
                walk.stream = None
            result = await _timed(walk, "fallback", fallback)
            assert result is not None and failure is not None and failure.diagnosis is not None
            report.steps.append(result)
            if on_step is not None:
                on_step(result)
            if walk.fallback_works is not None:
                failure.diagnosis = with_fallback_remedy(failure.diagnosis, walk.fallback_works)
    finally:
        if walk.stream is not None:
            await trio.aclose_forcefully(walk.stream)
    return report


async def _timed(walk: Walk, name: str, step: Step) -> StepResult | None:
    walk.details = []
    started = trio.current_time()
    try:
        outcome = await step(walk)
    except StepFailed as failure:
        elapsed = trio.current_time() - started
        return StepResult(name, "fail", failure.summary, elapsed, walk.details, failure.diagnosis)
    if outcome is None:
        return None
    status, summary, *rest = outcome
    diagnosis = rest[0] if rest else None
    seconds = None if status == "skip" else trio.current_time() - started
    return StepResult(name, status, summary, seconds, walk.details, diagnosis)
