"""OS-level firewall-simulating harness: any client program through the scenario catalogue.

Each scenario is a set of Linux network namespaces (client, router/firewall/proxy,
origin) joined by veth pairs, with nftables rules for the firewall, the companion
proxy (or squid, tinyproxy, pproxy, a SOCKS5 server) and the origin test server.
The client command runs in the client namespace with the scenario's environment;
the verdict comes from its outcome and from what the network saw it do. See docs/harness.md.
"""

from __future__ import annotations

from ._netns import cleanup_stale
from ._observe import FLAG_DESCRIPTIONS, Observation
from ._runner import (
    EXIT_CODES,
    ClientSpec,
    RunResult,
    ScenarioResult,
    builtin_client,
    check_prerequisites,
    run_client,
)
from ._scenarios import (
    BY_ID,
    CATALOGUE,
    Firewall,
    PacDelivery,
    ProxyKind,
    ProxySpec,
    Scenario,
    select,
)

__all__ = [
    "BY_ID",
    "CATALOGUE",
    "EXIT_CODES",
    "FLAG_DESCRIPTIONS",
    "ClientSpec",
    "Firewall",
    "Observation",
    "PacDelivery",
    "ProxyKind",
    "ProxySpec",
    "RunResult",
    "Scenario",
    "ScenarioResult",
    "builtin_client",
    "check_prerequisites",
    "cleanup_stale",
    "run_client",
    "select",
]
