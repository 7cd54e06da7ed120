"""``check`` against loopback equivalents of the scenario catalogue
(/work/shared/scenarios.md): the companion proxy stands in for each network,
and the table says which step must break and which cause ``check`` must name.
Real squid covers the port-443 policy of a third-party proxy."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import trio

from peers import run_squid
from tunnelws._check import CheckOptions, CheckReport, run_check
from tunnelws_testnet.companion import ProxyConfig, ReplyQuirks, Toxics, serve_proxy
from tunnelws_testnet.origin import LocalCA, OriginAddresses

USER, PASSWORD = "alice", "s3cret pass"


@dataclass(frozen=True)
class Scenario:
    """A catalogue row: the proxy's behaviour, the URL kind, check's options,
    and the expected outcome (``step``/``cause`` None: the path works)."""

    proxy: dict[str, Any] | None
    secure: bool
    step: str | None
    cause: str | None = None
    category: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    credentials: bool = False


SCENARIOS: dict[str, Scenario] = {
    "proxy-ws": Scenario({}, False, None),
    "proxy-wss": Scenario({}, True, None),
    "auth-basic": Scenario({"auth": (USER, PASSWORD)}, True, None, credentials=True),
    "auth-digest": Scenario(
        {"auth": (USER, PASSWORD), "auth_scheme": "digest"}, False, None, credentials=True
    ),
    "auth-407-close": Scenario(
        {"auth": (USER, PASSWORD), "auth_scheme": "digest", "close_after_407": True},
        False,
        None,
        credentials=True,
    ),
    "auth-basic-missing": Scenario(
        {"auth": (USER, PASSWORD)}, False, "connect", "auth-missing", "proxy-auth"
    ),
    "auth-basic-wrong": Scenario(
        {"auth": (USER, PASSWORD)},
        False,
        "connect",
        "auth-rejected",
        "proxy-auth",
        options={"proxy_auth": (USER, "wrong")},
    ),
    "ports-443-only": Scenario(
        {"allow_ports": frozenset({443})}, False, "connect", "port-policy", "proxy-refused"
    ),
    "domain-deny": Scenario(
        {"deny_hosts": ("127.0.0.0/8",)}, False, "connect", "host-denied", "proxy-refused"
    ),
    "proxy-http10": Scenario({"quirks": ReplyQuirks(http10=True)}, True, None),
    "proxy-2xx-quirks": Scenario(
        {"quirks": ReplyQuirks(connection_close=True, content_length=True)}, False, None
    ),
    "proxy-dribble": Scenario({"quirks": ReplyQuirks(dribble=True)}, False, None),
    "proxy-error-html": Scenario(
        {"quirks": ReplyQuirks(reply_status=502)},
        False,
        "connect",
        "origin-unreachable-from-proxy",
        "proxy-refused",
    ),
    "proxy-garbage": Scenario(
        {"quirks": ReplyQuirks(garbage=True)}, False, "connect", "not-http", "proxy-protocol"
    ),
    "proxy-close": Scenario(
        {"quirks": ReplyQuirks(close_without_reply=True)},
        False,
        "connect",
        "proxy-closed",
        "proxy-protocol",
    ),
    "proxy-silent": Scenario(
        {"quirks": ReplyQuirks(never_reply=True)},
        False,
        "connect",
        "proxy-silent",
        "timeout",
        options={"connect_timeout": 0.5},
    ),
    "proxy-huge-headers": Scenario(
        {"quirks": ReplyQuirks(huge_headers=True)},
        False,
        "connect",
        "huge-headers",
        "proxy-protocol",
    ),
    "tls-intercept-untrusted": Scenario({"intercept": True}, True, "tls", "tls-intercepted", "tls"),
    "idle-timeout": Scenario(
        {"toxics": Toxics(idle_timeout=0.6)},
        False,
        "idle",
        "idle-timeout",
        "connection-lost",
        options={"idle": 1.2},
    ),
    "tunnel-reset": Scenario(
        {"toxics": Toxics(reset_after_bytes=20_000)},
        False,
        "echo",
        "tunnel-reset",
        "connection-lost",
    ),
    "auth-ntlm": Scenario(
        {"auth": ("CORP\\alice", "ntlm-pass"), "auth_scheme": "ntlm"},
        False,
        None,
        options={"proxy_auth": ("CORP\\alice", "ntlm-pass")},
    ),
    "auth-ntlm-wrong": Scenario(
        {"auth": ("CORP\\alice", "ntlm-pass"), "auth_scheme": "ntlm"},
        False,
        "connect",
        "auth-rejected",
        "proxy-auth",
        options={"proxy_auth": ("CORP\\alice", "wrong")},
    ),
    "bandwidth-limit": Scenario(
        {"toxics": Toxics(bandwidth=512 * 1024)},
        False,
        None,
        options={"message_timeout": 30.0},
    ),
    "slow-link": Scenario(
        {"toxics": Toxics(latency_up=0.02, latency_down=0.02, slice_min=16, slice_max=512, seed=3)},
        False,
        None,
        options={"message_timeout": 30.0},
    ),
}


async def _check_through(
    nursery: trio.Nursery,
    origin: OriginAddresses,
    test_ca: LocalCA,
    scenario: Scenario,
) -> tuple[CheckReport, Any]:
    config: dict[str, Any] = dict(scenario.proxy or {})
    if config.get("intercept"):
        config["onward_ssl_context"] = test_ca.client_context()
    proxy = await nursery.start(serve_proxy, ProxyConfig(**config))
    options = CheckOptions(proxy=proxy.url, ssl_context=test_ca.client_context())
    if scenario.credentials:
        options = replace(options, proxy_auth=(USER, PASSWORD))
    options = replace(options, **scenario.options)
    url = origin.wss_url() if scenario.secure else origin.ws_url()
    with trio.fail_after(60):
        return await run_check(url, options), proxy


def _assert_outcome(report: CheckReport, scenario: Scenario) -> None:
    failure = report.failure
    if scenario.step is None:
        assert failure is None, f"unexpected failure: {failure}"
        assert report.exit_code == 0
        assert [s.name for s in report.steps if s.status == "ok"][-1] in ("echo", "sse", "idle")
        return
    assert failure is not None, f"expected {scenario.cause}, got success: {report.steps}"
    assert failure.diagnosis is not None
    assert (failure.name, failure.diagnosis.cause, failure.diagnosis.category) == (
        scenario.step,
        scenario.cause,
        scenario.category,
    ), failure
    assert report.exit_code == failure.diagnosis.exit_code != 0
    assert failure.diagnosis.remedy
    # The walk stops at the broken step; only the HTTP fallback's may follow.
    after = report.steps[report.steps.index(failure) + 1 :]
    assert [step.name for step in after] in ([], ["fallback"])


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_scenario(
    name: str, nursery: trio.Nursery, origin: OriginAddresses, test_ca: LocalCA
) -> None:
    scenario = SCENARIOS[name]
    report, proxy = await _check_through(nursery, origin, test_ca, scenario)
    _assert_outcome(report, scenario)
    # Credentials never appear in the report.
    assert PASSWORD not in str(report.to_dict())
    if scenario.step == "connect":
        # At most two CONNECTs for the tunnel (+1 probe to port 443 after a 403).
        assert proxy.stats.connects <= 3


async def test_auth_accepted_is_reported(
    nursery: trio.Nursery, origin: OriginAddresses, test_ca: LocalCA
) -> None:
    report, _ = await _check_through(nursery, origin, test_ca, SCENARIOS["auth-basic"])
    connect = report.step("connect")
    assert connect is not None and "Basic credentials accepted" in connect.summary
    assert any("Proxy-Authorization: Basic ***" in d for d in connect.details)


async def test_ports_443_only_wss_on_its_port_passes(
    nursery: trio.Nursery, origin: OriginAddresses, test_ca: LocalCA
) -> None:
    """The other half of ports-443-only: wss:// to the allowed (TLS) port works."""
    assert origin.https is not None
    scenario = Scenario({"allow_ports": frozenset({443, origin.https[1]})}, True, None)
    report, _ = await _check_through(nursery, origin, test_ca, scenario)
    _assert_outcome(report, scenario)


async def test_https_proxy_tls_in_tls(
    nursery: trio.Nursery, origin: OriginAddresses, test_ca: LocalCA
) -> None:
    """https-proxy: TLS to the proxy, then TLS to the origin inside it."""
    proxy = await nursery.start(serve_proxy, ProxyConfig(ssl_context=test_ca.server_context()))
    assert proxy.url.startswith("https://")
    options = CheckOptions(
        proxy=proxy.url,
        ssl_context=test_ca.client_context(),
        proxy_ssl_context=test_ca.client_context(),
    )
    report = await run_check(origin.wss_url(), options)
    assert report.ok, report.failure
    tcp = report.step("tcp")
    assert tcp is not None and "TLS to the proxy" in tcp.summary
    assert any(detail.startswith("proxy certificate:") for detail in tcp.details)
    # Without the proxy's CA the TLS to the proxy is what breaks.
    report = await run_check(origin.wss_url(), CheckOptions(proxy=proxy.url))
    failure = report.failure
    assert failure is not None and failure.name == "tcp"
    assert failure.diagnosis is not None and failure.diagnosis.cause == "proxy-tls"
    assert "--proxy-cacert" in failure.diagnosis.remedy
    assert report.exit_code == 9


async def test_tls_intercept_trusted_is_a_warning(
    nursery: trio.Nursery, origin: OriginAddresses, test_ca: LocalCA
) -> None:
    proxy = await nursery.start(
        serve_proxy, ProxyConfig(intercept=True, onward_ssl_context=test_ca.client_context())
    )
    assert proxy.ca_path is not None
    options = CheckOptions(proxy=proxy.url, ssl_context=_context_trusting(proxy.ca_path))
    report = await run_check(origin.wss_url(), options)
    assert report.ok and report.exit_code == 0
    tls = report.step("tls")
    assert tls is not None and tls.status == "warn"
    assert tls.diagnosis is not None and tls.diagnosis.cause == "tls-intercepted-trusted"
    assert "tunnelws companion proxy" in tls.diagnosis.message


async def test_transparent_proxy_stripping_upgrade(
    nursery: trio.Nursery, origin: OriginAddresses, test_ca: LocalCA
) -> None:
    """transparent-80: no proxy configured, plain traffic redirected to a
    filter that strips Upgrade (--connect-to stands in for the redirect)."""
    proxy = await nursery.start(serve_proxy, ProxyConfig(transparent=True, strip_upgrade=True))
    options = CheckOptions(proxy=None, connect_to=(proxy.host, proxy.port))
    report = await run_check(origin.ws_url(), options)
    failure = report.failure
    assert failure is not None and failure.name == "upgrade"
    assert failure.diagnosis is not None
    assert failure.diagnosis.cause == "upgrade-stripped"
    assert failure.diagnosis.category == "handshake" and report.exit_code == 10
    assert "Via" in " ".join(failure.details)  # /info shows the proxy's Via header
    assert "stripped Upgrade" in " ".join(failure.details)
    assert proxy.stats.forwards >= 1


async def test_direct_refused(origin: OriginAddresses) -> None:
    report = await run_check(f"ws://127.0.0.1:{_closed_port()}/echo", CheckOptions(proxy=None))
    failure = report.failure
    assert failure is not None and failure.name == "tcp"
    assert failure.diagnosis is not None and failure.diagnosis.cause == "tcp-refused"
    assert report.exit_code == 4


async def test_proxy_refused() -> None:
    options = CheckOptions(proxy=f"http://127.0.0.1:{_closed_port()}")
    report = await run_check("wss://origin.test/echo", options)
    failure = report.failure
    assert failure is not None and failure.name == "tcp"
    assert failure.diagnosis is not None and failure.diagnosis.category == "proxy-connect"
    assert report.exit_code == 5


async def test_no_dns_without_proxy() -> None:
    report = await run_check("wss://no-such-host.invalid/echo", CheckOptions(proxy=None))
    failure = report.failure
    assert failure is not None and failure.name == "dns"
    assert failure.diagnosis is not None and failure.diagnosis.cause == "no-dns"
    assert "proxy" in failure.diagnosis.remedy
    assert report.exit_code == 4


async def test_dns_is_skipped_when_the_proxy_resolves(
    nursery: trio.Nursery, origin: OriginAddresses
) -> None:
    proxy = await nursery.start(serve_proxy, ProxyConfig())
    report = await run_check(origin.ws_url(), CheckOptions(proxy=proxy.url))
    dns = report.step("dns")
    assert dns is not None and dns.status == "skip"
    assert "the proxy resolves it" in dns.summary


async def test_bad_proxy_variable_is_a_route_failure() -> None:
    env = {"https_proxy": "socks4://proxy.corp:1080"}
    report = await run_check("wss://ws.example/echo", CheckOptions(env=env))
    failure = report.failure
    assert failure is not None and failure.name == "route"
    assert failure.diagnosis is not None and "https_proxy" in failure.diagnosis.message
    assert report.exit_code == 3


async def test_route_explains_the_loopback_rule(origin: OriginAddresses) -> None:
    env = {"http_proxy": "http://proxy.invalid:3128"}
    report = await run_check(origin.ws_url(), CheckOptions(env=env))
    route = report.step("route")
    assert route is not None and route.summary.startswith("DIRECT")
    assert "loopback" in route.summary
    assert "http_proxy=set" in route.details[0]
    assert report.ok


async def test_squid_port_policy(origin: OriginAddresses, test_ca: LocalCA, tmp_path: Path) -> None:
    """Real squid with its stock CONNECT policy (443 only)."""
    with run_squid(tmp_path=tmp_path, allow_ports=(443,)) as squid:
        report = await run_check(origin.ws_url(), CheckOptions(proxy=squid.url))
    failure = report.failure
    assert failure is not None and failure.name == "connect"
    assert failure.diagnosis is not None and failure.diagnosis.cause == "port-policy"
    assert "use wss:// on port 443" in failure.diagnosis.remedy
    assert report.exit_code == 7


async def test_squid_open_path_passes(
    origin: OriginAddresses, test_ca: LocalCA, tmp_path: Path
) -> None:
    with run_squid(tmp_path=tmp_path, allow_ports=None) as squid:
        options = CheckOptions(proxy=squid.url, ssl_context=test_ca.client_context())
        report = await run_check(origin.wss_url(), options)
    assert report.ok, report.failure
    tls = report.step("tls")
    assert tls is not None and tls.status == "ok"  # squid does not intercept


def _context_trusting(path: Path) -> Any:
    import ssl

    context = ssl.create_default_context()
    context.load_verify_locations(str(path))
    return context


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_ipv6_origin_through_the_proxy(nursery: trio.Nursery) -> None:
    from tunnelws_testnet.origin import OriginConfig, serve_origin

    try:
        origin6 = await nursery.start(serve_origin, OriginConfig(host="::1"))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    proxy = await nursery.start(serve_proxy, ProxyConfig())
    port = origin6.http[1]
    with trio.fail_after(60):
        report = await run_check(f"ws://[::1]:{port}/echo", CheckOptions(proxy=proxy.url))
    assert report.failure is None, report.failure
    assert f"CONNECT [::1]:{port}" in str(report.to_dict())
