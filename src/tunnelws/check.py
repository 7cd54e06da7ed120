"""The ``tunnelws check`` walk as a library, with its text rendering.

``run_check(url, options, on_step=...)`` walks the path to a WebSocket server
(route, name resolution, TCP, CONNECT, TLS, upgrade, echo, idle, SSE) and
returns a :class:`CheckReport`; ``on_step`` gets each :class:`StepResult` as
it completes, so a caller can show progress. A failed step carries a
:class:`Diagnosis` (category, cause, message, remedy).

The text the command prints, for callers that show a walk the same way:

``render_step(step, number)``
    The lines of one step: a headline with mark, number, title, time and
    summary, then its details indented.
``render_conclusion(report)``
    The lines after the steps: each diagnosis with its remedy, then the
    result with the exit code.
``render_text(report)``
    The whole report as one string.
"""

from __future__ import annotations

from ._check import CheckOptions, CheckReport, Diagnosis, StepResult, render_text, run_check
from ._check._report import render_conclusion, render_step

__all__ = [
    "CheckOptions",
    "CheckReport",
    "Diagnosis",
    "StepResult",
    "render_conclusion",
    "render_step",
    "render_text",
    "run_check",
]
