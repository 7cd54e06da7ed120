"""What the network saw the client do, and the flags raised from it.

Sources: the firewall's counters (direct attempts, DNS queries), the proxy's
log (read by its kind's parser in :mod:`tunnelws_testnet.peers`) and the
origin's request log. The parsers are pure functions of the log text so they
can be tested on their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..peers import NtlmMessage, ProxyRequest, json_records
from ._scenarios import Scenario

__all__ = [
    "FLAG_DESCRIPTIONS",
    "Observation",
    "flags_for",
    "parse_origin_log",
    "request_host",
    "scenario_problems",
]

MAX_CONNECTS = 2  # one challenge and one answer (a scenario may allow more, NTLM 3)

FLAG_DESCRIPTIONS = {
    "direct-attempt": "connected (or tried) around the configured proxy",
    "local-dns": "looked the origin up in DNS although the proxy resolves names",
    "credentials-at-origin": "proxy credentials reached the origin",
    "absolute-form": "sent its WebSocket upgrade as an absolute-form request (GET ws://...) "
    "instead of CONNECT",
    "auth-loop": "more CONNECT attempts than one authenticated connection needs "
    f"({MAX_CONNECTS}; NTLM 3)",
}


@dataclass
class Observation:
    """Everything the harness saw on the network during one client run."""

    direct_attempts: int = 0  # packets of new connections beyond the router
    dns_queries: int = 0
    dead_proxy_attempts: int = 0  # connections to the PAC scenarios' dead proxy
    proxy_requests: list[ProxyRequest] = field(default_factory=list)
    origin_requests: list[dict[str, Any]] = field(default_factory=list)
    ntlm_messages: list[NtlmMessage] = field(default_factory=list)
    # (user, mechanism) of each tunnel the companion authenticated.
    authenticated: list[tuple[str, str]] = field(default_factory=list)

    @property
    def connect_attempts(self) -> int:
        return sum(1 for r in self.proxy_requests if r.method == "CONNECT")

    def requests_for(self, host: str) -> list[ProxyRequest]:
        """The proxied requests whose target is ``host``. Judgements use
        these: a browser's own background traffic through the same proxy
        (update checks, sign-in) says nothing about its WebSocket."""
        return [r for r in self.proxy_requests if request_host(r.target) == host.lower()]

    @property
    def credentials_at_origin(self) -> bool:
        return any(
            r.get("proxy_authorization") or r.get("secret_seen") for r in self.origin_requests
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "direct_attempts": self.direct_attempts,
            "dns_queries": self.dns_queries,
            "dead_proxy_attempts": self.dead_proxy_attempts,
            "connect_attempts": self.connect_attempts,
            "proxy_requests": [
                {"method": r.method, "target": r.target, "status": r.status, "event": r.event}
                for r in self.proxy_requests
            ],
            "origin_requests": self.origin_requests,
            "ntlm_messages": [
                {"connection": m.connection, "type": m.type} for m in self.ntlm_messages
            ],
            "authenticated": [
                {"user": user, "mechanism": mechanism} for user, mechanism in self.authenticated
            ],
        }

    def ntlm_handshake_on_one_connection(self) -> bool:
        """Messages 1, 2 and 3 were all seen on one connection."""
        types_by_connection: dict[str, set[int]] = {}
        for message in self.ntlm_messages:
            types_by_connection.setdefault(message.connection, set()).add(message.type)
        return any(types >= {1, 2, 3} for types in types_by_connection.values())


def parse_origin_log(text: str) -> list[dict[str, Any]]:
    """Request records from the harness origin's JSON log."""
    return json_records(text)


def request_host(target: str) -> str | None:
    """The host a proxied request was for, from a CONNECT authority
    (``host:port``, ``[v6]:port``) or an absolute-form URL."""
    authority = target.split("://", 1)[1].split("/", 1)[0] if "://" in target else target
    try:
        return urlsplit("//" + authority).hostname
    except ValueError:
        return None


def flags_for(scenario: Scenario, observation: Observation) -> list[str]:
    """Network-side flags: things a client must never do.

    Proxy-side flags judge only the requests for the scenario's origin.
    """
    flags = []
    for_origin = observation.requests_for(scenario.origin_host)
    if scenario.proxy_in_use and observation.direct_attempts:
        flags.append("direct-attempt")
    if scenario.proxy_in_use and observation.dns_queries and not scenario.client_resolves_names:
        flags.append("local-dns")
    if observation.credentials_at_origin:
        flags.append("credentials-at-origin")
    # The HTTP fallback's requests are absolute-form by design, not a mistake.
    if scenario.configure_proxy and any(r.absolute_form and not r.fallback for r in for_origin):
        flags.append("absolute-form")
    if sum(1 for r in for_origin if r.method == "CONNECT") > scenario.max_connects:
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
    if scenario.pac is not None and passed and not observation.dead_proxy_attempts:
        problems.append(
            "the PAC answer's first proxy (a closed port) was never tried: "
            "the client did not follow the PAC answer in order"
        )
    for_origin = observation.requests_for(scenario.origin_host)
    expected = scenario.expect_connects
    connects = sum(1 for r in for_origin if r.method == "CONNECT")
    if expected is not None and passed and connects != expected:
        problems.append(f"proxy should have seen exactly {expected} CONNECT(s), saw {connects}")
    if (
        scenario.expect_ntlm_one_connection
        and passed
        and not observation.ntlm_handshake_on_one_connection()
    ):
        seen = [(m.connection, m.type) for m in observation.ntlm_messages]
        problems.append(
            f"NTLM messages 1, 2 and 3 should share one connection, saw {seen or 'none'}"
        )
    wanted = scenario.expect_authenticated
    if wanted is not None and passed and wanted not in observation.authenticated:
        problems.append(
            f"the proxy should have authenticated {wanted[0]} by {wanted[1]}, "
            f"saw {observation.authenticated or 'no authenticated tunnel'}"
        )
    if scenario.expect_proxy_untouched and for_origin:
        count = len(for_origin)
        problems.append(f"no_proxy should bypass the proxy, but it saw {count} for the origin")
    return problems
