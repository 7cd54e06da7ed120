"""What the network saw the client do, and the flags raised from it.

Sources: the firewall's counters (direct attempts, DNS queries), the proxy's
log (companion JSON lines, squid's access.log, tinyproxy's log) and the
origin's request log. The parsers are pure functions of the log text so they
can be tested on their own.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ._scenarios import ProxyKind, Scenario

__all__ = [
    "FLAG_DESCRIPTIONS",
    "Observation",
    "ProxyRequest",
    "flags_for",
    "parse_companion_log",
    "parse_origin_log",
    "parse_pproxy_log",
    "parse_squid_log",
    "parse_tinyproxy_log",
    "scenario_problems",
]

MAX_CONNECTS = 2  # one challenge and one answer; more is an authentication loop

FLAG_DESCRIPTIONS = {
    "direct-attempt": "connected (or tried) around the configured proxy",
    "local-dns": "looked the origin up in DNS although the proxy resolves names",
    "credentials-at-origin": "proxy credentials reached the origin",
    "absolute-form": "sent an absolute-form request (GET ws://...) instead of CONNECT",
    "auth-loop": f"more than {MAX_CONNECTS} CONNECT attempts for one connection",
}


@dataclass(frozen=True)
class ProxyRequest:
    """One request the proxy received (method, target as sent, status if known)."""

    method: str
    target: str
    status: int | None = None
    event: str = ""

    @property
    def absolute_form(self) -> bool:
        return self.method != "CONNECT" and "://" in self.target


@dataclass
class Observation:
    """Everything the harness saw on the network during one client run."""

    direct_attempts: int = 0  # packets of new connections beyond the router
    dns_queries: int = 0
    proxy_requests: list[ProxyRequest] = field(default_factory=list)
    origin_requests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def connect_attempts(self) -> int:
        return sum(1 for r in self.proxy_requests if r.method == "CONNECT")

    @property
    def credentials_at_origin(self) -> bool:
        return any(
            r.get("proxy_authorization") or r.get("secret_seen") for r in self.origin_requests
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "direct_attempts": self.direct_attempts,
            "dns_queries": self.dns_queries,
            "connect_attempts": self.connect_attempts,
            "proxy_requests": [
                {"method": r.method, "target": r.target, "status": r.status, "event": r.event}
                for r in self.proxy_requests
            ],
            "origin_requests": self.origin_requests,
        }


def parse_companion_log(text: str) -> list[ProxyRequest]:
    """Requests from the companion proxy's JSON log (one object per line)."""
    requests = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("method"):
            status = record.get("status")
            requests.append(
                ProxyRequest(
                    method=str(record["method"]),
                    target=str(record.get("target", "")),
                    status=status if isinstance(status, int) else None,
                    event=str(record.get("event", "")),
                )
            )
    return requests


def parse_squid_log(text: str) -> list[ProxyRequest]:
    """Requests from squid's native access.log format."""
    requests = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 7:
            continue
        code, _, status = fields[3].partition("/")
        requests.append(
            ProxyRequest(
                method=fields[5],
                target=fields[6],
                status=int(status) if status.isdigit() else None,
                event=code,
            )
        )
    return requests


_TINYPROXY_REQUEST = re.compile(r"Request \(file descriptor \d+\): (\S+) (\S+)")


def parse_tinyproxy_log(text: str) -> list[ProxyRequest]:
    """Requests from tinyproxy's log (``Request (file descriptor N): METHOD TARGET``)."""
    return [
        ProxyRequest(method=m.group(1), target=m.group(2), event="request")
        for m in _TINYPROXY_REQUEST.finditer(text)
    ]


_PPROXY_TUNNEL = re.compile(r"^http\S* (\S+) -> (\S+)$", re.MULTILINE)


def parse_pproxy_log(text: str) -> list[ProxyRequest]:
    """Requests from pproxy's ``-v`` output (``http CLIENT -> TARGET`` per request).

    pproxy logs CONNECT tunnels and forwarded requests alike; both count as CONNECTs.
    """
    return [
        ProxyRequest(method="CONNECT", target=m.group(2), event="pproxy")
        for m in _PPROXY_TUNNEL.finditer(text)
    ]


PROXY_LOG_PARSERS = {
    ProxyKind.COMPANION: parse_companion_log,
    ProxyKind.SQUID: parse_squid_log,
    ProxyKind.TINYPROXY: parse_tinyproxy_log,
    ProxyKind.PPROXY: parse_pproxy_log,
}


def parse_origin_log(text: str) -> list[dict[str, Any]]:
    """Request records from the harness origin's JSON log."""
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def flags_for(scenario: Scenario, observation: Observation) -> list[str]:
    """Network-side flags: things a client must never do."""
    flags = []
    if scenario.proxy_in_use and observation.direct_attempts:
        flags.append("direct-attempt")
    if scenario.proxy_in_use and observation.dns_queries:
        flags.append("local-dns")
    if observation.credentials_at_origin:
        flags.append("credentials-at-origin")
    if scenario.configure_proxy and any(r.absolute_form for r in observation.proxy_requests):
        flags.append("absolute-form")
    if observation.connect_attempts > MAX_CONNECTS:
        flags.append("auth-loop")
    return flags


def scenario_problems(scenario: Scenario, observation: Observation, passed: bool) -> list[str]:
    """Scenario-specific expectations about what the proxy saw, as problems found."""
    problems = []
    if scenario.expect_connect_target is not None and passed:
        targets = [r.target for r in observation.proxy_requests if r.method == "CONNECT"]
        if scenario.expect_connect_target not in targets:
            problems.append(
                f"proxy should have seen CONNECT {scenario.expect_connect_target}, "
                f"saw {targets or 'none'}"
            )
    if scenario.expect_proxy_untouched and observation.proxy_requests:
        problems.append(
            f"no_proxy should bypass the proxy, but it saw {len(observation.proxy_requests)} "
            "request(s)"
        )
    return problems
