"""What every proxy kind provides: a :class:`Launch` (argv, files, port,
readiness, log) for one start, and the parsed requests of its log."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from tunnelws.fallback import FallbackProtocolError, parse_fallback_path

from ._process import find_binary, listening, tail

__all__ = [
    "Launch",
    "LogParser",
    "Peer",
    "PeerStartError",
    "PeerUnavailableError",
    "ProxyRequest",
    "check_config_safe",
    "is_fallback_target",
    "json_records",
    "missing_binary",
    "require_binary",
]


class PeerUnavailableError(RuntimeError):
    """The proxy cannot run here (binary or package missing); the message
    says what to install."""


class PeerStartError(RuntimeError):
    """The proxy did not come up; the message carries the tail of its output."""


@dataclass(frozen=True)
class ProxyRequest:
    """One request a proxy logged (method, target as sent, status if known)."""

    method: str
    target: str
    status: int | None = None
    event: str = ""

    @property
    def absolute_form(self) -> bool:
        return self.method != "CONNECT" and "://" in self.target

    @property
    def fallback(self) -> bool:
        """An HTTP fallback request (``POST http://host/echo/_tunnelws/1/open``):
        absolute form is how those are meant to reach a forwarding proxy."""
        return self.absolute_form and is_fallback_target(self.target)


def is_fallback_target(target: str) -> bool:
    """Whether a request target (absolute URL or path) is for a fallback endpoint."""
    path = urlsplit(target).path if "://" in target else target
    try:
        return parse_fallback_path(path) is not None
    except FallbackProtocolError:
        return True  # the fallback's path, another version of it


LogParser = Callable[[str], list[ProxyRequest]]


def _no_log(text: str) -> list[ProxyRequest]:
    return []


def _nothing() -> None:
    pass


@dataclass
class Launch:
    """One prepared start of a proxy on ``host:port``: its command and files
    are ready; starting the process (on loopback, or in a network namespace)
    is the caller's.

    ``ready(pid)`` says when it serves: when ``ready_line`` appears in its
    output, else once the PID listens on the port. ``log`` is where it logs
    requests (for some kinds its output), ``parse`` reads that text. Stop it
    with ``stop_signal``; after it is gone call ``finish()``, after which its
    log is at ``final_log``.
    """

    name: str
    argv: list[str]
    host: str
    port: int
    scheme: str  # of the proxy URL a client is given: http, https, socks5
    output: Path  # stdout and stderr
    log: Path | None = None
    parse: LogParser = _no_log
    ready_line: str | None = None
    stop_signal: signal.Signals = signal.SIGTERM
    start_timeout: float = 10.0
    # Seconds after a client is done before its last request is in the log.
    log_delay: float = 0.0
    finish: Callable[[], None] = field(default=_nothing, repr=False)
    final_log: Path | None = None

    def __post_init__(self) -> None:
        if self.final_log is None:
            self.final_log = self.log

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def ready(self, pid: int) -> bool:
        if self.ready_line is not None:
            return self.ready_line in tail(self.output, 100_000)
        return listening(pid, self.host, self.port)

    def diagnostics(self) -> str:
        """The tail of its output and of its log, for an error message."""
        text = tail(self.output)
        if self.log is not None and self.log != self.output:
            text += tail(self.log)
        return text


class Peer(Protocol):
    """A proxy kind, configured: everything needed to start one."""

    @property
    def name(self) -> str: ...

    def missing(self) -> str | None:
        """Why it cannot run here (what to install), or None."""
        ...

    def launch(self, directory: Path, host: str, port: int) -> Launch:
        """Write its files under ``directory`` and return the command for
        listening on ``host:port``."""
        ...


def check_config_safe(value: str, what: str, forbidden: str) -> None:
    """Reject a value that would break the proxy's config syntax (never
    echoing it: it may be a password)."""
    bad = [c for c in forbidden if c in value]
    if not value or bad or any(c.isspace() for c in value):
        raise ValueError(f"{what} must be non-empty without whitespace or {forbidden!r}")


def missing_binary(name: str, explicit: str | None) -> str | None:
    """Why the system binary ``name`` (``explicit``: a path given instead)
    cannot be used, or None."""
    if (explicit or find_binary(name)) is None:
        return f"{name} is not installed (Debian package {name})"
    return None


def require_binary(name: str, explicit: str | None) -> str:
    """``explicit`` or the installed ``name``; :class:`PeerUnavailableError` if absent."""
    binary = explicit or find_binary(name)
    if binary is None:
        raise PeerUnavailableError(missing_binary(name, explicit) or name)
    return binary


def json_records(text: str) -> list[dict[str, object]]:
    """The JSON objects of a JSON-lines log; other lines are skipped."""
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
