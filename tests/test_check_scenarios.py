"""``check`` against loopback equivalents of the harness's scenario catalogue
(``tunnelws_testnet.harness.CATALOGUE``, docs/harness.md): the companion proxy
stands in for each network, and the table, keyed by catalogue ids, says which
step must break and which cause ``check`` must name; the failure category is
the catalogue's expectation. Real squid covers the port-443 policy of a
third-party proxy."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import trio

from conftest import skip_or_fail
from peers import run_squid
from tunnelws._check import CheckOptions, CheckReport, run_check
from tunnelws_testnet.companion import ProxyConfig, ReplyQuirks, Toxics, serve_proxy
from tunnelws_testnet.harness import BY_ID
from tunnelws_testnet.origin import LocalCA, OriginAddresses

USER, PASSWORD = "alice", "s3cret pass"


@dataclass(frozen=True)
class CheckCase:
    """How ``check`` meets one catalogue scenario here: the companion's
    behaviour, the URL kind and check's options, and where the walk must stop
    (``step``/``cause`` None: the path works).

    The category is the catalogue's expectation; ``expect`` overrides it
    only where ``check`` by design sees what a correct client does not.
    """

    proxy: dict[str, Any] | None
    secure: bool
    step: str | None
    cause: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    credentials: bool = False
    expect: str | None = None

    def category(self, scenario_id: str) -> str | None:
        expect = self.expect or BY_ID[scenario_id].expect
        return None if expect == "pass" else expect.removeprefix("fail:")


#: Keyed by catalogue id (tests/test_catalogue.py checks every key is one).
CHECKS: dict[str, CheckCase] = {
    "proxy-ws": CheckCase({}, False, None),
    "proxy-wss": CheckCase({}, True, None),
    "auth-basic": CheckCase({"auth": (USER, PASSWORD)}, True, None, credentials=True),
    "auth-digest": CheckCase(
        {"auth": (USER, PASSWORD), "auth_scheme": "digest"}, False, None, credentials=True
    ),
    "auth-407-close": CheckCase(
        {"auth": (USER, PASSWORD), "auth_scheme": "digest", "close_after_407": True},
        False,
        None,
        credentials=True,
    ),
    "auth-basic-missing": CheckCase(
        {"auth": (USER, PASSWORD)}, False, "connect", "auth-missing"
    ),
    "auth-basic-wrong": CheckCase(
        {"auth": (USER, PASSWORD)},
        False,
        "connect",
        "auth-rejected",
        options={"proxy_auth": (USER, "wrong")},
    ),
    "ports-443-only-ws": CheckCase(
        {"allow_ports": frozenset({443})}, False, "connect", "port-policy"
    ),
    "domain-deny": CheckCase(
        {"deny_hosts": ("127.0.0.0/8",)}, False, "connect", "host-denied"
    ),
    "proxy-http10": CheckCase({"quirks": ReplyQuirks(http10=True)}, True, None),
    "proxy-2xx-quirks": CheckCase(
        {"quirks": ReplyQuirks(connection_close=True, content_length=True)}, False, None
    ),
    "proxy-dribble": CheckCase({"quirks": ReplyQuirks(dribble=True)}, False, None),
    "proxy-error-html": CheckCase(
        {"quirks": ReplyQuirks(reply_status=502)},
        False,
        "connect",
        "origin-unreachable-from-proxy",
    ),
    "proxy-garbage": CheckCase(
        {"quirks": ReplyQuirks(garbage=True)}, False, "connect", "not-http"
    ),
    "proxy-close": CheckCase(
        {"quirks": ReplyQuirks(close_without_reply=True)},
        False,
        "connect",
        "proxy-closed",
    ),
    "proxy-silent": CheckCase(
        {"quirks": ReplyQuirks(never_reply=True)},
        False,
        "connect",
        "proxy-silent",
        options={"connect_timeout": 0.5},
    ),
    "proxy-huge-headers": CheckCase(
        {"quirks": ReplyQuirks(huge_headers=True)},
        False,
        "connect",
        "huge-headers",
    ),
    "tls-intercept-untrusted": CheckCase({"intercept": True}, True, "tls", "tls-intercepted"),
    "idle-timeout": CheckCase(
        {"toxics": Toxics(idle_timeout=0.6)},
        False,
        "idle",
        "idle-timeout",
        options={"idle": 1.2},
        # check holds the tunnel idle without pings, so it meets the close a
        # client without keepalive meets (a correct client pings and passes).
        expect="fail:connection-lost",
    ),
    "tunnel-reset": CheckCase(
        {"toxics": Toxics(reset_after_bytes=20_000)},
        False,
        "echo",
        "tunnel-reset",
    ),
    "auth-ntlm": CheckCase(
        {"auth": ("CORP\\alice", "ntlm-pass"), "auth_scheme": "ntlm"},
        False,
        None,
        options={"proxy_auth": ("CORP\\alice", "ntlm-pass")},
    ),
    "auth-ntlm-wrong": CheckCase(
        {"auth": ("CORP\\alice", "ntlm-pass"), "auth_scheme": "ntlm"},
        False,
        "connect",
        "auth-rejected",
        options={"proxy_auth": ("CORP\\alice", "wrong")},
    ),
    "bandwidth-limit": CheckCase(
        {"toxics": Toxics(bandwidth=512 * 1024)},
        False,
        None,
        options={"message_timeout": 30.0},
    ),
    "slow-link": CheckCase(
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
    case: CheckCase,
) -> tuple[CheckReport, Any]:
    config: dict[str, Any] = dict(case.proxy or {})
    if config.get("intercept"):
        config["onward_ssl_context"] = test_ca.client_context()
    proxy = await nursery.start(serve_proxy, ProxyConfig(**config))
    options = CheckOptions(proxy=proxy.url, ssl_context=test_ca.client_context())
    if case.credentials:
        options = replace(options, proxy_auth=(USER, PASSWORD))
    options = replace(options, **case.options)
    url = origin.wss_url() if case.secure else origin.ws_url()
    with trio.fail_after(60):
        return await run_check(url, options), proxy


def _assert_outcome(report: CheckReport, case: CheckCase, scenario_id: str) -> None:
    failure = report.failure
    category = case.category(scenario_id)
    # A path that works is one a correct client passes, and the reverse.
    assert (case.step is None) == (category is None), scenario_id
    if case.step is None:
        assert failure is None, f"unexpected failure: {failure}"
        assert report.exit_code == 0
        assert [s.name for s in report.steps if s.status == "ok"][-1] in ("echo", "sse", "idle")
        return
    assert failure is not None, f"expected {case.cause}, got success: {report.steps}"
    assert failure.diagnosis is not None
    assert (failure.name, failure.diagnosis.cause, failure.diagnosis.category) == (
        case.step,
        case.cause,
        category,
    ), failure
    assert report.exit_code == failure.diagnosis.exit_code != 0
    assert failure.diagnosis.remedy
    # The walk stops at the broken step; only the HTTP fallback's may follow.
    after = report.steps[report.steps.index(failure) + 1 :]
    assert [step.name for step in after] in ([], ["fallback"])


@pytest.mark.parametrize("name", list(CHECKS))
async def test_scenario(
    name: str, nursery: trio.Nursery, origin: OriginAddresses, test_ca: LocalCA
) -> None:
    case = CHECKS[name]
    report, proxy = await _check_through(nursery, origin, test_ca, case)
    _assert_outcome(report, case, name)
    # Credentials never appear in the report.
    assert PASSWORD not in str(report.to_dict())
    if case.step == "connect":
        # At most two CONNECTs for the tunnel (+1 probe to port 443 after a 403).
        assert proxy.stats.connects <= 3


async def test_auth_accepted_is_reported(
    nursery: trio.Nursery, origin: OriginAddresses, test_ca: LocalCA
) -> None:
    report, _ = await _check_through(nursery, origin, test_ca, CHECKS["auth-basic"])
    connect = report.step("connect")
    assert connect is not None and "Basic credentials accepted" in connect.summary
    assert any("Proxy-Authorization: Basic ***" in d for d in connect.details)


async def test_ports_443_only_wss_on_its_port_passes(
    nursery: trio.Nursery, origin: OriginAddresses, test_ca: LocalCA
) -> None:
    """ports-443-only-wss: wss:// to the allowed (TLS) port works."""
    assert origin.https is not None
    case = CheckCase({"allow_ports": frozenset({443, origin.https[1]})}, True, None)
    report, _ = await _check_through(nursery, origin, test_ca, case)
    _assert_outcome(report, case, "ports-443-only-wss")


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
    """transparent-80-ws: no proxy configured, plain traffic redirected to a
    filter that strips Upgrade (--connect-to stands in for the redirect)."""
    proxy = await nursery.start(serve_proxy, ProxyConfig(transparent=True, strip_upgrade=True))
    options = CheckOptions(proxy=None, connect_to=(proxy.host, proxy.port))
    report = await run_check(origin.ws_url(), options)
    failure = report.failure
    assert failure is not None and failure.name == "upgrade"
    assert failure.diagnosis is not None
    assert failure.diagnosis.cause == "upgrade-stripped"
    assert failure.diagnosis.category == BY_ID["transparent-80-ws"].expected_category
    assert report.exit_code == 10
    assert "Via" in " ".join(failure.details)  # /info shows the proxy's Via header
    assert "stripped Upgrade" in " ".join(failure.details)
    assert proxy.stats.forwards >= 1


async def test_direct_refused(origin: OriginAddresses) -> None:
    """blocked-reject: nothing listens, no proxy."""
    report = await run_check(f"ws://127.0.0.1:{_closed_port()}/echo", CheckOptions(proxy=None))
    failure = report.failure
    assert failure is not None and failure.name == "tcp"
    assert failure.diagnosis is not None and failure.diagnosis.cause == "tcp-refused"
    assert failure.diagnosis.category == BY_ID["blocked-reject"].expected_category
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
    """ports-443-only-ws through real squid with its stock CONNECT policy (443 only)."""
    with run_squid(tmp_path=tmp_path, allow_ports=(443,)) as squid:
        report = await run_check(origin.ws_url(), CheckOptions(proxy=squid.url))
    failure = report.failure
    assert failure is not None and failure.name == "connect"
    assert failure.diagnosis is not None and failure.diagnosis.cause == "port-policy"
    assert failure.diagnosis.category == BY_ID["ports-443-only-ws"].expected_category
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
    """proxy-ipv6-target: the CONNECT carries the bracketed literal."""
    from tunnelws_testnet.origin import OriginConfig, serve_origin

    try:
        origin6 = await nursery.start(serve_origin, OriginConfig(host="::1"))
    except OSError:
        skip_or_fail("no IPv6 loopback on this machine")
    proxy = await nursery.start(serve_proxy, ProxyConfig())
    port = origin6.http[1]
    with trio.fail_after(60):
        report = await run_check(f"ws://[::1]:{port}/echo", CheckOptions(proxy=proxy.url))
    assert report.failure is None, report.failure
    assert f"CONNECT [::1]:{port}" in str(report.to_dict())
