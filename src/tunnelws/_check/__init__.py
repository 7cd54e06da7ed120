"""``tunnelws check``: walk the path to a WebSocket server step by step
(route, name resolution, TCP, CONNECT, TLS, upgrade, echo, idle, SSE), time
each step, and explain the first one that breaks with a cause and a remedy.

The rules that turn observations into diagnoses are pure (``_diagnose``);
the probing is trio (``_probe``); the report is data (``_report``).
"""

from __future__ import annotations

from ._probe import CheckOptions, run_check
from ._report import CheckReport, Diagnosis, StepResult, render_text

__all__ = ["CheckOptions", "CheckReport", "Diagnosis", "StepResult", "render_text", "run_check"]
