"""Which destinations the proxy lets a client reach, and how it refuses.

Pure. Host rules are names (matching the name and its subdomains on label
boundaries, so ``example.com`` covers ``a.example.com`` but not
``badexample.com``) or IP networks in CIDR form (matching IP-literal targets;
like real proxies' ACLs on ``dstdomain``/``dst`` without DNS, names are never
resolved to match a CIDR).
"""

from __future__ import annotations

import html
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["HostRules", "Policy", "Refusal", "error_page"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def reason_phrase(status: int) -> str:
    return REASONS.get(status, "Error" if status >= 400 else "OK")


@dataclass(frozen=True)
class HostRules:
    """A set of host names (suffix match on labels) and IP networks."""

    names: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> HostRules:
        """Build from strings such as ``example.com``, ``.corp``, ``10.0.0.0/8``, ``::1``."""
        names: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in entries:
            text = entry.strip().strip("[]")
            if not text:
                continue
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                names.add(text.lstrip("*").lstrip(".").rstrip(".").lower())
        return cls(frozenset(names), tuple(networks))

    def __bool__(self) -> bool:
        return bool(self.names or self.networks)

    def matches(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            name = host.rstrip(".").lower()
            return any(name == rule or name.endswith("." + rule) for rule in self.names)
        return any(address in network for network in self.networks) or str(address) in self.names


@dataclass(frozen=True)
class Refusal:
    """A policy decision to refuse: the status to send and why."""

    status: int
    reason: str


@dataclass(frozen=True)
class Policy:
    """Port and host allow/deny rules.

    ``allow_ports=None`` allows every port; ``connect_ports`` (None: no
    further limit) restricts CONNECT alone, like squid's ``SSL_ports``;
    ``allow_hosts`` empty allows every host; ``deny_hosts`` wins over
    ``allow_hosts``.
    """

    allow_ports: frozenset[int] | None = None
    allow_hosts: HostRules = HostRules()
    deny_hosts: HostRules = HostRules()
    deny_status: int = 403
    connect_ports: frozenset[int] | None = None

    def check(self, host: str, port: int, *, connect: bool = True) -> Refusal | None:
        if self.allow_ports is not None and port not in self.allow_ports:
            return Refusal(self.deny_status, f"port {port} is not allowed")
        if connect and self.connect_ports is not None and port not in self.connect_ports:
            return Refusal(self.deny_status, f"CONNECT to port {port} is not allowed")
        if self.deny_hosts.matches(host):
            return Refusal(self.deny_status, f"host {host} is denied")
        if self.allow_hosts and not self.allow_hosts.matches(host):
            return Refusal(self.deny_status, f"host {host} is not on the allow list")
        return None


def error_page(status: int, detail: str) -> bytes:
    """An HTML error body in the style of squid's error pages."""
    title = f"{status} {reason_phrase(status)}"
    return (
        "<!DOCTYPE html>\n<html><head><title>ERROR: The requested URL could not be retrieved"
        f"</title></head>\n<body><h1>{html.escape(title)}</h1>\n"
        f"<p>{html.escape(detail)}</p>\n<hr><address>tunnelws companion proxy</address>\n"
        "</body></html>\n"
    ).encode()
