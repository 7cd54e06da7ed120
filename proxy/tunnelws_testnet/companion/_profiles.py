"""Named bundles of behaviours that stand in for kinds of real proxies.

A profile is just a :class:`ProxyConfig`; explicit options override its parts
with :func:`dataclasses.replace` (the CLI does exactly that).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ._config import ProxyConfig
from ._toxics import Toxics

__all__ = ["PROFILES", "SQUID_SAFE_PORTS", "Profile"]

# squid.conf's stock ``Safe_ports``: where forwarded requests may go.
SQUID_SAFE_PORTS = frozenset({80, 21, 443, 70, 210, 280, 488, 591, 777, *range(1025, 65536)})


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    config: ProxyConfig


_ALL = (
    Profile("open", "a plain open proxy: any port, no auth, no faults", ProxyConfig()),
    Profile(
        "squid-default",
        "like squid's stock config: CONNECT only to port 443, forwarded requests to its"
        " Safe_ports (80, 21, 443, 70, 210, 280, 488, 591, 777, 1025-65535), Upgrade stripped",
        ProxyConfig(
            allow_ports=SQUID_SAFE_PORTS, connect_ports=frozenset({443}), strip_upgrade=True
        ),
    ),
    Profile(
        "forward-only",
        "refuses CONNECT (405) and strips Upgrade: only plain forwarded HTTP passes",
        ProxyConfig(refuse_connect=True, strip_upgrade=True),
    ),
    Profile(
        "buffering",
        "forward-only, and holds each response until 1 MiB or its end (a scanning proxy)",
        ProxyConfig(refuse_connect=True, strip_upgrade=True, buffer_responses=1024 * 1024),
    ),
    Profile(
        "strict-corporate",
        "Basic auth (user:password unless --auth), CONNECT only to 443, Upgrade stripped,"
        " tunnels idle 30 s closed",
        ProxyConfig(
            auth=("user", "password"),
            auth_scheme="basic",
            allow_ports=frozenset({443}),
            strip_upgrade=True,
            toxics=Toxics(idle_timeout=30.0),
        ),
    ),
    Profile(
        "intercepting",
        "terminates TLS in CONNECT tunnels with certificates from its own CA",
        ProxyConfig(intercept=True),
    ),
    Profile(
        "flaky",
        "50 ms latency each way, writes sliced to 1..64 bytes, 0.2% of chunks reset the tunnel"
        " (seed 1)",
        ProxyConfig(
            toxics=Toxics(
                latency_up=0.05,
                latency_down=0.05,
                slice_min=1,
                slice_max=64,
                reset_chance=0.002,
                seed=1,
            )
        ),
    ),
)

PROFILES: Mapping[str, Profile] = MappingProxyType({profile.name: profile for profile in _ALL})
