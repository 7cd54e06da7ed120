"""nftables rulesets for the router namespace: the scenario's firewall.

:func:`ruleset` is pure (a scenario's policy in, nft text out), so the rules
can be read and tested without root. Two named counters make the network-side
observations: ``direct`` counts new connections the client starts towards
anything beyond the router (a direct attempt when a proxy is configured), and
``dns`` counts DNS queries the client sends (it has no other resolver), which
are then rejected so resolvers fail fast instead of waiting. A third,
``dead_proxy``, counts connection attempts to the router's
:data:`DEAD_PROXY_PORT`, the PAC scenarios' first (unreachable) proxy, which
is rejected with a TCP reset.
"""

from __future__ import annotations

import json
import subprocess

from ._scenarios import DEAD_PROXY_PORT, TRANSPARENT_PORT, Firewall

__all__ = ["TABLE", "apply_ruleset", "read_counters", "ruleset"]

TABLE = "tws"
CLIENT_SIDE = "cli0"  # the router's interface towards the client


def ruleset(firewall: Firewall) -> str:
    """The nft script for ``firewall``, as ``nft -f`` reads it."""
    forward = {
        Firewall.OPEN: [f'iifname "{CLIENT_SIDE}" accept'],
        Firewall.REJECT: _reject_rest(),
        Firewall.DROP: [],  # the chain's policy drops silently
        Firewall.TRANSPARENT_80: [f'iifname "{CLIENT_SIDE}" tcp dport 443 accept', *_reject_rest()],
    }[firewall]
    prerouting = []
    if firewall is Firewall.TRANSPARENT_80:
        # The client believes it talks to the origin; the router answers instead.
        prerouting.append(f'iifname "{CLIENT_SIDE}" tcp dport 80 redirect to :{TRANSPARENT_PORT}')
    lines = [
        f"table inet {TABLE} {{",
        "  counter direct { }",
        "  counter dns { }",
        "  counter dead_proxy { }",
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        *(f"    {rule}" for rule in prerouting),
        "  }",
        "  chain input {",
        "    type filter hook input priority filter; policy accept;",
        f'    iifname "{CLIENT_SIDE}" meta l4proto {{ tcp, udp }} th dport 53 counter name "dns" '
        "reject with icmpx type port-unreachable",
        f'    iifname "{CLIENT_SIDE}" tcp dport {DEAD_PROXY_PORT} ct state new '
        'counter name "dead_proxy" reject with tcp reset',
        "  }",
        "  chain forward {",
        "    type filter hook forward priority filter; policy drop;",
        "    ct state established,related accept",
        f'    iifname "{CLIENT_SIDE}" ct state new counter name "direct"',
        *(f"    {rule}" for rule in forward),
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _reject_rest() -> list[str]:
    return [
        f'iifname "{CLIENT_SIDE}" meta l4proto tcp reject with tcp reset',
        f'iifname "{CLIENT_SIDE}" reject with icmpx type admin-prohibited',
    ]


def apply_ruleset(netns: str, firewall: Firewall) -> None:
    """Load the ruleset into ``netns`` (raises ``RuntimeError`` with nft's message)."""
    result = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "-f", "-"],
        input=ruleset(firewall),
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"nft -f failed in {netns}: {result.stderr.strip()}")


def read_counters(netns: str) -> dict[str, int]:
    """Packets per named counter (``direct``, ``dns``, ``dead_proxy``); empty if unreadable."""
    result = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "-j", "list", "counters", "table", "inet", TABLE],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if result.returncode != 0:
        return {}
    counters: dict[str, int] = {}
    for item in json.loads(result.stdout).get("nftables", []):
        counter = item.get("counter")
        if isinstance(counter, dict) and "name" in counter:
            counters[str(counter["name"])] = int(counter.get("packets", 0))
    return counters
