"""pytest plugin: corporate networks inside the test process (trio tests).

Registered as the ``tunnelws`` pytest11 entry point, or load it with
``-p tunnelws_testnet.pytest_plugin`` / ``pytest_plugins = [...]``. Needs
pytest-trio (the fixtures are trio fixtures).

Fixtures:

``corporate_network``
    A running :class:`~tunnelws_testnet.inprocess.CorporateNetwork` for one
    scenario, with the client's environment applied (proxy variables,
    ``no_proxy``, ``SSL_CERT_FILE``...; every other proxy variable unset).
    The scenario comes from indirect parametrization
    (``@pytest.mark.parametrize("corporate_network", ["proxy-ws"],
    indirect=True)``), else from ``@pytest.mark.corporate_network("id")``,
    else ``proxy-wss``.

``open_corporate_network``
    A factory for tests that pick or build the scenario themselves:
    ``network = await open_corporate_network("auth-digest")``. One network
    per test (trio has one socket factory per run).

See docs/pytest-plugin.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

from ._extras import missing_extra

# The test network (and its optional dependencies, trustme) is imported only
# when a fixture is used: the entry point loads this module into every pytest
# session of every project that installs tunnelws, with or without the extra.
if TYPE_CHECKING:
    from .inprocess import CorporateNetwork, Scenario

__all__ = ["DEFAULT_SCENARIO", "apply_environment", "corporate_network", "open_corporate_network"]

DEFAULT_SCENARIO = "proxy-wss"

OpenNetwork = Callable[["str | Scenario"], Awaitable["CorporateNetwork"]]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "corporate_network(scenario): the tunnelws scenario the corporate_network fixture "
        "runs (see docs/pytest-plugin.md)",
    )


def apply_environment(network: CorporateNetwork, monkeypatch: pytest.MonkeyPatch) -> None:
    """Give the test process the network's client environment (undone by
    ``monkeypatch`` at teardown); proxy variables from the host are removed."""
    from .inprocess import PROXY_VARIABLES

    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in network.env.items():
        monkeypatch.setenv(name, value)


def _scenario_for(request: pytest.FixtureRequest) -> str | Scenario:
    param = getattr(request, "param", None)
    if param is not None:
        return param  # type: ignore[no-any-return]
    marker = request.node.get_closest_marker("corporate_network")
    if marker is not None:
        if len(marker.args) != 1:
            raise pytest.UsageError("@pytest.mark.corporate_network takes one scenario id")
        return marker.args[0]  # type: ignore[no-any-return]
    return DEFAULT_SCENARIO


def _check(scenario: str | Scenario) -> None:
    from .inprocess import SCENARIOS

    if isinstance(scenario, str) and scenario not in SCENARIOS:
        raise pytest.UsageError(
            f"unknown tunnelws scenario {scenario!r}; known: {', '.join(SCENARIOS)}"
        )


async def _serve_network(
    scenario: str | Scenario,
    directory: Path,
    *,
    task_status: trio.TaskStatus[CorporateNetwork] = trio.TASK_STATUS_IGNORED,
) -> None:
    # The network lives in a task of the fixture's nursery, so it is opened
    # and closed by the same task whichever task asked for it.
    from .inprocess import open_network

    async with open_network(scenario, directory=directory) as network:
        task_status.started(network)
        await trio.sleep_forever()


@pytest.fixture
def _tunnelws_testnet_extra() -> None:
    """Without the ``testnet`` extra, an error in one line naming what to
    install (a plain fixture: trio's would wrap it in an exception group)."""
    problem = missing_extra()
    if problem is not None:
        pytest.fail(f"corporate_network: {problem}", pytrace=False)


@pytest.fixture
async def open_corporate_network(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, _tunnelws_testnet_extra: None
) -> AsyncIterator[OpenNetwork]:
    """A factory: ``await open_corporate_network(scenario)`` starts the
    network, applies its environment and returns it; it stops at teardown."""
    started: list[CorporateNetwork] = []
    async with trio.open_nursery() as nursery:

        async def start(scenario: str | Scenario) -> CorporateNetwork:
            _check(scenario)
            if started:
                raise RuntimeError("one corporate network per test (trio has one firewall per run)")
            network: CorporateNetwork = await nursery.start(
                _serve_network, scenario, tmp_path / "tunnelws-network"
            )
            apply_environment(network, monkeypatch)
            started.append(network)
            return network

        yield start
        nursery.cancel_scope.cancel()


@pytest.fixture
async def corporate_network(
    request: pytest.FixtureRequest, open_corporate_network: OpenNetwork
) -> CorporateNetwork:
    """The scenario's network, running, with its environment applied."""
    return await open_corporate_network(_scenario_for(request))
