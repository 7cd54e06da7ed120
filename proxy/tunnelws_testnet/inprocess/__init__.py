"""In-process corporate networks: no root, any OS, one trio run.

A scenario's origin server and companion proxy run as tasks of the current
trio run, and a :class:`Firewall` installed through trio's custom socket
factory and hostname resolver decides what the run's *other* tasks (the
client under test) may reach: only the proxy, typically, with names left
unresolvable so that only the proxy can resolve the origin::

    async with open_network("proxy-wss") as network:
        async with open_websocket(network.url, proxy=network.proxy_url,
                                  ssl_context=network.ssl_context()) as ws:
            ...
        assert not network.observations.direct_connects()

The pytest plugin (:mod:`tunnelws_testnet.pytest_plugin`) wraps this in
fixtures. See docs/pytest-plugin.md.
"""

from ._firewall import (
    ConnectAttempt,
    Egress,
    Firewall,
    Lookup,
    Observations,
    network_side,
    on_network_side,
)
from ._network import PROXY_VARIABLES, CorporateNetwork, client_environment, open_network
from ._scenarios import ORIGIN_HOST, PROXY_PASSWORD, PROXY_USER, SCENARIOS, Scenario

__all__ = [
    "ORIGIN_HOST",
    "PROXY_PASSWORD",
    "PROXY_USER",
    "PROXY_VARIABLES",
    "SCENARIOS",
    "ConnectAttempt",
    "CorporateNetwork",
    "Egress",
    "Firewall",
    "Lookup",
    "Observations",
    "Scenario",
    "client_environment",
    "network_side",
    "on_network_side",
    "open_network",
]
