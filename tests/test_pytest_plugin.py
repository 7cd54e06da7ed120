"""In-process corporate networks: the trio firewall, the scenario networks and
the pytest plugin's fixtures, exercised with the tunnelws client.

The plugin is loaded by this module's ``pytest_plugins`` unless the
``tunnelws`` pytest11 entry point is installed; the pytester test loads it
the way users do.
"""

from __future__ import annotations

import importlib.metadata
import socket
from typing import Any

import pytest
import trio
import trio.socket

from tunnelws import (
    DirectConnectError,
    PhaseTimeoutError,
    TunnelError,
    open_websocket,
)
from tunnelws_testnet.inprocess import (
    ORIGIN_HOST,
    PROXY_PASSWORD,
    SCENARIOS,
    CorporateNetwork,
    Firewall,
    network_side,
    open_network,
)


def _entry_point_installed() -> bool:
    return any(
        entry.name == "tunnelws" for entry in importlib.metadata.entry_points(group="pytest11")
    )


# Load the plugin here unless its entry point already did (loading it twice
# under two names is an error).
PLUGIN = "tunnelws_testnet.pytest_plugin"
pytest_plugins = ["pytester"] if _entry_point_installed() else ["pytester", PLUGIN]


async def _listener(*, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """A TCP server on loopback that accepts and closes; reports its port."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])

    async def handle(stream: trio.SocketStream) -> None:
        await stream.aclose()

    await trio.serve_listeners(handle, listeners)


# -- the firewall on its own -------------------------------------------------


async def test_reject_refuses_unlisted_addresses_and_records_them(
    nursery: trio.Nursery,
) -> None:
    port = await nursery.start(_listener)
    firewall = Firewall(egress="reject")
    firewall.install()
    try:
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", port)
        firewall.allow("127.0.0.1", port)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.aclose()
    finally:
        firewall.uninstall()
    verdicts = [(a.port, a.verdict) for a in firewall.observations.connects]
    assert verdicts == [(port, "rejected"), (port, "allowed")]
    assert [a.verdict for a in firewall.observations.direct_connects()] == ["rejected"]


async def test_blackhole_never_answers() -> None:
    firewall = Firewall(egress="blackhole")
    with firewall.installed(), trio.move_on_after(0.3) as scope:
        await trio.open_tcp_stream("127.0.0.1", 9)
    assert trio.socket.set_custom_socket_factory(None) is None  # uninstalled
    assert scope.cancelled_caught
    assert firewall.observations.connects[0].blocked


async def test_network_side_tasks_are_not_filtered(nursery: trio.Nursery) -> None:
    port = await nursery.start(_listener)
    firewall = Firewall(egress="reject", network_hosts={"origin.test": "127.0.0.1"})
    reached: list[bool] = []

    async def proxy_like(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # A name only the network side can resolve, and an unlisted address.
        stream = await trio.open_tcp_stream("origin.test", port)
        await stream.aclose()
        reached.append(True)
        task_status.started()

    firewall.install()
    try:
        await nursery.start(network_side, proxy_like)
    finally:
        firewall.uninstall()
    assert reached == [True]
    assert firewall.observations.connects == []
    assert firewall.observations.lookups == []


async def test_client_lookups_fail_like_no_dns_and_are_recorded() -> None:
    firewall = Firewall(client_hosts={"known.test": "127.0.0.1"})
    firewall.install()
    try:
        with pytest.raises(socket.gaierror):
            await trio.socket.getaddrinfo("origin.test", 443)
        answer = await trio.socket.getaddrinfo("known.test", 443, type=socket.SOCK_STREAM)
        # IP literals are answered by trio itself: no lookup recorded.
        await trio.socket.getaddrinfo("127.0.0.1", 443)
    finally:
        firewall.uninstall()
    assert answer[0][4][:2] == ("127.0.0.1", 443)
    lookups = firewall.observations.lookups
    assert [(lookup.host, lookup.answered) for lookup in lookups] == [
        ("origin.test", False),
        ("known.test", True),
    ]
    assert firewall.observations.looked_up("ORIGIN.test.")


async def test_uninstall_restores_the_previous_factory_and_resolver() -> None:
    outer = Firewall()
    inner = Firewall()
    outer.install()
    inner.install()
    inner.uninstall()
    # The outer firewall is back in charge.
    with pytest.raises(socket.gaierror):
        await trio.socket.getaddrinfo("unknown.test", 80)
    outer.uninstall()
    assert [lookup.host for lookup in outer.observations.lookups] == ["unknown.test"]
    assert inner.observations.lookups == []
    assert trio.socket.set_custom_socket_factory(None) is None
    with pytest.raises(RuntimeError, match="already installed"):
        outer.install()
        outer.install()
    outer.uninstall()


# -- scenario networks with the tunnelws client -----------------------------


async def _exchange(network: CorporateNetwork, message: str = "hello") -> list[str | bytes]:
    """Send one message (two when the scenario asks for an idle wait) and
    return the echoes; the client reads everything from the environment."""
    scenario = network.scenario
    echoes: list[str | bytes] = []
    ping = 1.0 if scenario.idle else None
    with trio.fail_after(15):
        async with open_websocket(network.url, connect_timeout=2, ping_interval=ping) as ws:
            for round_ in range(2 if scenario.idle else 1):
                if round_:
                    await trio.sleep(scenario.idle)
                await ws.send(message)
                echoes.append(await ws.receive())
    return echoes


async def test_proxied_client_reaches_origin_only_through_the_proxy(
    open_corporate_network: Any,
) -> None:
    network = await open_corporate_network("proxy-wss")
    assert await _exchange(network, "through") == ["through"]
    observations = network.observations
    assert observations.direct_connects() == []
    assert [a.verdict for a in observations.connects] == ["allowed"]
    # The proxy resolved the origin's name; the client never tried.
    assert not observations.looked_up(ORIGIN_HOST)
    assert network.proxy is not None
    assert network.proxy.stats.connects == 1
    assert network.proxy.stats.targets[f"{ORIGIN_HOST}:{network.origin.https[1]}"] == 1  # type: ignore[index]


async def test_blocked_direct_connect_fails_fast(open_corporate_network: Any) -> None:
    network = await open_corporate_network("blocked-reject")
    start = trio.current_time()
    with pytest.raises(DirectConnectError):
        await _exchange(network)
    assert trio.current_time() - start < 1.0
    assert [a.verdict for a in network.observations.connects] == ["rejected"]


async def test_blackholed_direct_connect_times_out_naming_the_phase(
    open_corporate_network: Any,
) -> None:
    network = await open_corporate_network("blocked-blackhole")
    with pytest.raises(PhaseTimeoutError) as caught:
        await _exchange(network)
    assert caught.value.phase == "connect"
    assert [a.verdict for a in network.observations.connects] == ["blackholed"]


async def test_environment_is_applied_and_credentials_hidden(
    open_corporate_network: Any,
) -> None:
    import os

    network = await open_corporate_network("auth-basic")
    assert network.proxy_url is not None
    assert os.environ["https_proxy"] == network.proxy_url
    assert os.environ["SSL_CERT_FILE"] == str(network.ca_file)
    assert "HTTPS_PROXY" not in os.environ
    assert "s3cr%40t%3A%2F%25@" in network.proxy_url  # percent-encoded in the URL
    assert PROXY_PASSWORD not in repr(network)
    assert "s3cr" not in repr(network)


@pytest.mark.parametrize("corporate_network", sorted(SCENARIOS), indirect=True)
async def test_tunnelws_meets_every_scenario(corporate_network: CorporateNetwork) -> None:
    """The tunnelws client, configured only by the environment, ends as a
    correct client must in each scenario."""
    network = corporate_network
    expected = network.scenario.expected_category
    if expected is None:
        assert await _exchange(network, "echo me") == ["echo me"] * (
            2 if network.scenario.idle else 1
        )
    else:
        with pytest.raises(TunnelError) as caught:
            await _exchange(network)
        assert caught.value.category == expected, caught.value
    if network.scenario.no_proxy:
        # Bypassed: straight to the origin, the proxy sees nothing.
        assert network.proxy is not None
        assert network.proxy.stats.connections == 0
        assert [a.verdict for a in network.observations.connects] == ["open"]
    elif network.scenario.proxied:
        # Proxied: never a direct connect, never a local lookup of the origin,
        # at most two CONNECTs (one retry for credentials).
        assert network.observations.direct_connects() == []
        assert not network.observations.looked_up(ORIGIN_HOST)
        assert network.proxy is not None
        assert 1 <= network.proxy.stats.connects <= 2


async def test_open_network_without_pytest() -> None:
    async with open_network("proxy-ws") as network:
        assert network.url.startswith(f"ws://{ORIGIN_HOST}:")
        async with open_websocket(network.url, proxy=network.proxy_url, connect_timeout=5) as ws:
            await ws.send("plain")
            assert await ws.receive() == "plain"
    # The firewall is gone with the network.
    assert trio.socket.set_custom_hostname_resolver(None) is None


# -- the plugin as users load it ----------------------------------------------


def _plugin_args() -> list[str]:
    installed = any(
        entry.name == "tunnelws" for entry in importlib.metadata.entry_points(group="pytest11")
    )
    return [] if installed else ["-p", "tunnelws_testnet.pytest_plugin"]


def test_plugin_fixtures_marker_and_default(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(
        """
        import pytest
        from tunnelws import ProxyAuthError, open_websocket

        async def test_default(corporate_network):
            assert corporate_network.scenario.id == "proxy-wss"
            async with open_websocket(corporate_network.url, connect_timeout=5) as ws:
                await ws.send("x")
                assert await ws.receive() == "x"

        @pytest.mark.corporate_network("auth-basic-missing")
        async def test_marker(corporate_network):
            with pytest.raises(ProxyAuthError):
                async with open_websocket(corporate_network.url, connect_timeout=5):
                    pass
            assert corporate_network.proxy.stats.auth_challenges >= 1

        async def test_factory(open_corporate_network):
            network = await open_corporate_network("proxy-ws")
            assert network.url.startswith("ws://")

        async def test_unknown(open_corporate_network):
            await open_corporate_network("no-such-scenario")
        """
    )
    result = pytester.runpytest_subprocess(*_plugin_args(), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*unknown tunnelws scenario 'no-such-scenario'*"])
