"""curl-style verbose tracing of the connection path, credentials redacted.

A trace is any callable taking one line. Lines start with ``*`` for what
tunnelws does, ``>`` for bytes sent to the proxy and ``<`` for bytes received,
as in ``curl -v``, so people read them fluently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

__all__ = ["SECRET_HEADERS", "Trace", "redact_header", "trace_head"]

Trace = Callable[[str], None]

# Headers whose values are credentials. Only the scheme is shown.
SECRET_HEADERS = frozenset({"proxy-authorization", "authorization", "cookie"})


def redact_header(name: str, value: str) -> str:
    """``Name: value`` with credential values replaced by ``***``."""
    if name.lower() in SECRET_HEADERS:
        scheme, _, rest = value.partition(" ")
        return f"{name}: {scheme} ***" if rest else f"{name}: ***"
    return f"{name}: {value}"


def trace_head(
    trace: Trace | None, marker: str, start_line: str, headers: Iterable[tuple[str, str]]
) -> None:
    """Trace an HTTP request or response head, one line per header."""
    if trace is None:
        return
    trace(f"{marker} {start_line}")
    for name, value in headers:
        trace(f"{marker} {redact_header(name, value)}")
    trace(marker)
