"""What ``tunnelws check`` found: one result per step, a diagnosis for the
first broken one, and how that becomes text, JSON and an exit code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .._errors import (
    ConnectionLostError,
    DirectConnectError,
    HandshakeError,
    PhaseTimeoutError,
    ProxyAuthError,
    ProxyConfigError,
    ProxyConnectError,
    ProxyProtocolError,
    ProxyRefusedError,
    TLSError,
    TunnelError,
)

__all__ = [
    "STEP_TITLES",
    "CheckReport",
    "Diagnosis",
    "Severity",
    "StepResult",
    "StepStatus",
    "exit_code_for",
    "render_text",
]

StepStatus = Literal["ok", "fail", "warn", "skip"]
Severity = Literal["error", "warning"]

#: The steps in the order they run, with the words the report uses for them.
STEP_TITLES: dict[str, str] = {
    "route": "route",
    "dns": "name resolution",
    "tcp": "TCP",
    "connect": "CONNECT",
    "tls": "TLS",
    "upgrade": "WebSocket upgrade",
    "echo": "echo",
    "idle": "idle tunnel",
    "sse": "SSE",
    "fallback": "HTTP fallback",
}

_TAXONOMY: tuple[type[TunnelError], ...] = (
    ProxyConfigError,
    DirectConnectError,
    ProxyConnectError,
    ProxyAuthError,
    ProxyRefusedError,
    ProxyProtocolError,
    TLSError,
    HandshakeError,
    PhaseTimeoutError,
    ConnectionLostError,
)
_EXIT_CODES: dict[str, int] = {error.category: error.exit_code for error in _TAXONOMY}

_MARKS: dict[StepStatus, str] = {"ok": "✔", "fail": "✘", "warn": "!", "skip": "-"}


def exit_code_for(category: str) -> int:
    """The CLI exit code of a taxonomy category (``"proxy-auth"`` -> 6)."""
    return _EXIT_CODES[category]


@dataclass(frozen=True)
class Diagnosis:
    """Why a step broke (or looks wrong), and what to do about it.

    ``category`` is the error taxonomy's (it decides the exit code); ``cause``
    is a short stable identifier for machines and tests (``"port-policy"``,
    ``"tls-intercepted"``); ``message`` and ``remedy`` are for people.
    """

    category: str
    cause: str
    message: str
    remedy: str
    severity: Severity = "error"

    def __post_init__(self) -> None:
        if self.category not in _EXIT_CODES:
            raise ValueError(f"unknown error category {self.category!r}")

    @property
    def exit_code(self) -> int:
        return exit_code_for(self.category)


@dataclass
class StepResult:
    """One step of the walk: its outcome, how long it took, what was seen."""

    name: str
    status: StepStatus
    summary: str
    seconds: float | None = None
    details: list[str] = field(default_factory=list)
    diagnosis: Diagnosis | None = None

    @property
    def title(self) -> str:
        return STEP_TITLES.get(self.name, self.name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.name,
            "status": self.status,
            "summary": self.summary,
            "seconds": None if self.seconds is None else round(self.seconds, 6),
            "details": list(self.details),
            "diagnosis": None
            if self.diagnosis is None
            else {
                "category": self.diagnosis.category,
                "cause": self.diagnosis.cause,
                "message": self.diagnosis.message,
                "remedy": self.diagnosis.remedy,
                "severity": self.diagnosis.severity,
            },
        }


@dataclass
class CheckReport:
    """Every step that ran, in order; the walk stops at the first failure."""

    url: str
    steps: list[StepResult] = field(default_factory=list)

    @property
    def failure(self) -> StepResult | None:
        """The step that broke the path, if any."""
        return next((step for step in self.steps if step.status == "fail"), None)

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def exit_code(self) -> int:
        failure = self.failure
        if failure is None:
            return 0
        return failure.diagnosis.exit_code if failure.diagnosis is not None else 1

    def step(self, name: str) -> StepResult | None:
        return next((step for step in self.steps if step.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        failure = self.failure
        return {
            "url": self.url,
            "ok": failure is None,
            "exit_code": self.exit_code,
            "failed_step": None if failure is None else failure.name,
            "steps": [step.to_dict() for step in self.steps],
        }


def render_step(step: StepResult, number: int) -> list[str]:
    """The report lines of one step: a headline, then indented details."""
    timing = "" if step.seconds is None else f"{step.seconds * 1000:8.1f} ms"
    lines = [f"{_MARKS[step.status]} {number} {step.title:<18}{timing:>12}  {step.summary}"]
    lines += [f"      {detail}" for detail in step.details]
    return lines


def render_diagnosis(diagnosis: Diagnosis) -> list[str]:
    label = "Diagnosis" if diagnosis.severity == "error" else "Warning"
    return [
        f"{label} ({diagnosis.category}: {diagnosis.cause}): {diagnosis.message}",
        f"Remedy: {diagnosis.remedy}",
    ]


def render_text(report: CheckReport) -> str:
    """The readable report: one line per step, then the diagnoses."""
    lines = [f"tunnelws check {report.url}"]
    for number, step in enumerate(report.steps, 1):
        lines += render_step(step, number)
    lines.append("")
    lines += render_conclusion(report)
    return "\n".join(lines)


def render_conclusion(report: CheckReport) -> list[str]:
    lines: list[str] = []
    for step in report.steps:
        if step.diagnosis is not None:
            lines += render_diagnosis(step.diagnosis)
    failure = report.failure
    if failure is None:
        lines.append("Result: the path works (exit 0).")
    else:
        lines.append(f"Result: broken at step '{failure.name}' (exit {report.exit_code}).")
    return lines
