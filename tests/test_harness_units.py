"""The harness's pure parts: catalogue, firewall rules, log parsers, verdicts, reports.

No root needed; the OS-level runs are in test_harness_run.py.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import tunnelws
from tunnelws_testnet.harness import BY_ID, CATALOGUE, EXIT_CODES, ClientSpec, Firewall, select
from tunnelws_testnet.harness._firewall import ruleset
from tunnelws_testnet.harness._netns import install_system_ca
from tunnelws_testnet.harness._network import (
    ORIGIN_CERT_NAMES,
    PROXY_CERT_NAMES,
    _client_env,
    _proxy_url,
    make_harness_ca,
    pac_script,
)
from tunnelws_testnet.harness._observe import (
    Observation,
    flags_for,
    request_host,
    scenario_problems,
)
from tunnelws_testnet.harness._report import junit_xml, load_runs, report_html, write_report
from tunnelws_testnet.harness._runner import RunResult, ScenarioResult, _echoed, _judge
from tunnelws_testnet.peers import (
    NtlmMessage,
    ProxyRequest,
    parse_authentications,
    parse_companion_log,
    parse_microsocks_log,
    parse_ntlm_messages,
    parse_pproxy_log,
    parse_squid_log,
    parse_tinyproxy_log,
)


def scenario(sid: str):  # type: ignore[no-untyped-def]
    return next(s for s in CATALOGUE if s.id == sid)


def test_exit_codes_match_tunnelws_taxonomy() -> None:
    classes = [
        tunnelws.DirectConnectError,
        tunnelws.ProxyConfigError,
        tunnelws.ProxyConnectError,
        tunnelws.ProxyAuthError,
        tunnelws.ProxyRefusedError,
        tunnelws.ProxyProtocolError,
        tunnelws.TLSError,
        tunnelws.HandshakeError,
        tunnelws.PhaseTimeoutError,
        tunnelws.ConnectionLostError,
    ]
    assert {c.category: c.exit_code for c in classes} == EXIT_CODES


def test_select_by_id_group_and_unknown() -> None:
    assert [s.id for s in select(["ports-443-only"])] == ["ports-443-only-wss", "ports-443-only-ws"]
    assert [s.id for s in select(["proxy-ws"])] == ["proxy-ws"]
    assert len(select([])) == len(CATALOGUE)
    with pytest.raises(KeyError, match="nope"):
        select(["proxy-ws", "nope"])


def test_urls_and_authorities() -> None:
    assert scenario("proxy-ipv6-target").url == "ws://[fd77:2::2]:8080/echo"
    assert scenario("ports-443-only-wss").url == "wss://10.77.2.2:443/echo"
    assert scenario("proxy-no-dns").authority == "origin.corp.test:8080"


def test_ruleset_per_firewall() -> None:
    open_rules = ruleset(Firewall.OPEN)
    assert 'iifname "cli0" accept' in open_rules and "redirect" not in open_rules
    reject = ruleset(Firewall.REJECT)
    assert "reject with tcp reset" in reject
    drop = ruleset(Firewall.DROP)
    forward_drop = drop[drop.index("chain forward") :]
    assert "policy drop" in drop and "reject with tcp reset" not in forward_drop
    transparent = ruleset(Firewall.TRANSPARENT_80)
    assert "tcp dport 80 redirect to :3129" in transparent
    assert "tcp dport 443 accept" in transparent
    for text in (open_rules, reject, drop, transparent):
        # In the forward chain, counting comes before any verdict, so every
        # direct attempt is counted whatever happens to it.
        forward = text[text.index("chain forward") :].splitlines()
        counting = next(i for i, line in enumerate(forward) if 'counter name "direct"' in line)
        deciding = [
            i
            for i, line in enumerate(forward)
            if ("accept" in line or "reject" in line) and "established" not in line
        ]
        assert all(counting < i for i in deciding)
        assert 'th dport 53 counter name "dns"' in text


def test_parse_companion_log() -> None:
    text = "\n".join(
        [
            json.dumps(
                {"event": "auth-required", "method": "CONNECT", "target": "a:1", "status": 407}
            ),
            json.dumps({"event": "tunnel", "method": "CONNECT", "target": "a:1", "status": 200}),
            json.dumps(
                {"event": "bad-request", "method": "GET", "target": "ws://a:1/echo", "status": 400}
            ),
            "not json",
        ]
    )
    requests = parse_companion_log(text)
    assert [r.status for r in requests] == [407, 200, 400]
    assert [r.absolute_form for r in requests] == [False, False, True]
    assert not any(r.fallback for r in requests)


def test_fallback_requests_are_not_flagged_absolute_form() -> None:
    scenario = BY_ID["forward-only-ws"]
    base = "http://10.77.2.2:8080/echo/_tunnelws/"
    fallback = [
        ProxyRequest("POST", base + "1/open", 201),
        ProxyRequest("GET", base + "1/abc-12/down", 200),
        ProxyRequest("POST", base + "2/open", 400),  # another version: still the fallback's
    ]
    assert all(r.fallback for r in fallback)
    assert flags_for(scenario, Observation(proxy_requests=fallback)) == []
    upgrade = ProxyRequest("GET", "ws://10.77.2.2:8080/echo", 400)
    aiohttp_style = ProxyRequest("GET", "http://10.77.2.2:8080/echo", 101)
    for wrong in (upgrade, aiohttp_style):
        seen = Observation(proxy_requests=[*fallback, wrong])
        assert flags_for(scenario, seen) == ["absolute-form"]


def test_expectation_depends_on_the_fallback() -> None:
    scenario = BY_ID["forward-only-ws"]
    assert scenario.expect_for(fallback=False) == scenario.expect == "fail:proxy-refused"
    assert scenario.expect_for(fallback=True) == "pass"
    plain = BY_ID["proxy-ws"]
    assert plain.expect_for(fallback=True) == plain.expect_for(fallback=False) == "pass"
    assert "with a fallback: pass" in scenario.expect_both and plain.expect_both == "pass"


def test_parse_squid_and_tinyproxy_logs() -> None:
    squid = (
        "1795568631.671      3 10.77.1.2 TCP_DENIED/403 3476 CONNECT 10.77.2.2:8080 - "
        "HIER_NONE/- text/html\n"
    )
    assert parse_squid_log(squid) == [ProxyRequest("CONNECT", "10.77.2.2:8080", 403, "TCP_DENIED")]
    tiny = (
        "CONNECT   Nov 25 01:00:00.123 [42]: Connect (file descriptor 7): 10.77.1.2\n"
        "CONNECT   Nov 25 01:00:00.124 [42]: Request (file descriptor 7): "
        "CONNECT 10.77.2.2:8080 HTTP/1.1\n"
    )
    assert parse_tinyproxy_log(tiny) == [ProxyRequest("CONNECT", "10.77.2.2:8080", None, "request")]


def test_flags() -> None:
    proxied = scenario("proxy-ws")
    host = proxied.origin_host
    seen = Observation(
        direct_attempts=2,
        dns_queries=1,
        proxy_requests=[ProxyRequest("CONNECT", f"{host}:1")] * 3
        + [ProxyRequest("GET", f"ws://{host}:1/")],
        origin_requests=[{"proxy_authorization": False, "secret_seen": True}],
    )
    assert flags_for(proxied, seen) == [
        "direct-attempt",
        "local-dns",
        "credentials-at-origin",
        "absolute-form",
        "auth-loop",
    ]
    # A browser's own traffic through the proxy is not the WebSocket's doing.
    background = Observation(
        proxy_requests=[ProxyRequest("POST", "http://update.googleapis.com/service/update2")]
        + [ProxyRequest("CONNECT", "accounts.google.com:443", 407)] * 5
    )
    assert flags_for(proxied, background) == []
    # Absolute form is a flag for the WebSocket URL itself, in either scheme; an
    # HTTP fallback's requests under its path are plain HTTP through a proxy.
    for target in (f"ws://{host}:8080/echo", f"http://{host}:8080/echo"):
        forwarded = Observation(proxy_requests=[ProxyRequest("GET", target)])
        assert flags_for(proxied, forwarded) == ["absolute-form"], target
    fallback = [ProxyRequest("POST", f"http://{host}:8080/echo/_tunnelws/1/open", 201)]
    assert flags_for(proxied, Observation(proxy_requests=fallback)) == []
    assert request_host("[fd77:2::2]:8080") == "fd77:2::2"
    assert request_host("ws://Origin.Corp.Test/echo") == "origin.corp.test"
    # Without a proxy in use, direct connections and lookups are what is expected.
    assert flags_for(scenario("open-direct"), Observation(direct_attempts=3, dns_queries=1)) == []
    assert flags_for(scenario("no-proxy-cidr"), Observation(direct_attempts=1)) == []


def test_scenario_problems() -> None:
    ws = scenario("proxy-ws")
    assert (
        scenario_problems(
            ws, Observation(proxy_requests=[ProxyRequest("CONNECT", "10.77.2.2:8080")]), passed=True
        )
        == []
    )
    assert "CONNECT 10.77.2.2:8080" in scenario_problems(ws, Observation(), passed=True)[0]
    bypass = scenario("no-proxy-cidr")
    to_origin = ProxyRequest("CONNECT", f"{bypass.origin_host}:8080")
    assert scenario_problems(bypass, Observation(proxy_requests=[to_origin]), passed=True)
    # The browser's own requests elsewhere do not count against no_proxy.
    elsewhere = ProxyRequest("CONNECT", "accounts.google.com:443")
    assert scenario_problems(bypass, Observation(proxy_requests=[elsewhere]), passed=True) == []


def _result(sid: str, exit_code: int | None, *, timed_out: bool = False) -> ScenarioResult:
    s = scenario(sid)
    return ScenarioResult(
        s.id,
        s.catalogue_id,
        s.section,
        s.expect,
        "error",
        exit_code=exit_code,
        timed_out=timed_out,
        time_limit=s.time_limit,
    )


@pytest.mark.parametrize(
    ("sid", "exit_code", "echoed", "timed_out", "exit_codes", "verdict"),
    [
        ("proxy-ws", 0, True, False, False, "correct"),
        ("proxy-ws", 0, False, False, False, "wrong"),  # no echo printed
        ("proxy-ws", 1, False, False, False, "wrong"),
        ("proxy-ws", None, False, True, False, "wrong"),  # hung
        ("blocked-reject", 4, False, False, True, "correct"),
        ("blocked-reject", 1, False, False, False, "correct"),  # category not checked
        ("blocked-reject", 11, False, False, True, "wrong"),  # wrong category
        ("blocked-reject", 0, False, False, False, "wrong"),  # succeeded where impossible
    ],
)
def test_judge(
    sid: str, exit_code: int | None, echoed: bool, timed_out: bool, exit_codes: bool, verdict: str
) -> None:
    result = _result(sid, exit_code, timed_out=timed_out)
    observation = Observation(proxy_requests=[ProxyRequest("CONNECT", "10.77.2.2:8080")])
    _judge(ClientSpec("c", ("c",), exit_codes), scenario(sid), result, observation, echoed=echoed)
    assert result.verdict == verdict, result.reasons
    assert bool(result.reasons) == (verdict == "wrong")


def test_echo_must_be_a_whole_line() -> None:
    assert _echoed("connected\nhello 1\n", "hello 1")
    assert _echoed("hello 1\r\n", "hello 1")
    assert not _echoed("hello 12\n", "hello 1")


def _run(client: str, verdicts: dict[str, str]) -> RunResult:
    results = []
    for sid, verdict in verdicts.items():
        result = _result(sid, 0)
        result.verdict = verdict
        result.reasons = [] if verdict == "correct" else ["because <b>"]
        result.stdout = "out & about"
        results.append(result)
    return RunResult(client, [client, "--x"], "2026-01-01T00:00:00Z", 1.5, results)


def test_reports_merge_clients_into_one_matrix(tmp_path: Path) -> None:
    write_report(tmp_path, _run("alpha", {"proxy-ws": "correct", "blocked-reject": "wrong"}))
    write_report(tmp_path, _run("beta", {"proxy-ws": "skipped"}))
    write_report(tmp_path, _run("alpha", {"proxy-ws": "correct"}))  # replaces alpha's run
    runs = load_runs(tmp_path)
    assert [r["client"] for r in runs] == ["beta", "alpha"]
    assert [r["scenario"] for r in runs[1]["results"]] == ["proxy-ws"]

    suites = ET.fromstring((tmp_path / "junit.xml").read_text())
    assert [s.get("name") for s in suites] == ["harness.beta", "harness.alpha"]
    assert suites[0][0].find("skipped") is not None

    page = (tmp_path / "report.html").read_text()
    assert "<th>alpha</th>" in page and "<th>beta</th>" in page
    assert "href='#d-alpha--proxy-ws'" in page and "id='d-alpha--proxy-ws'" in page
    assert "out &amp; about" in page
    assert "because <b>" not in page and "because &lt;b&gt;" in page


def test_junit_failure_carries_reasons() -> None:
    run = _run("gamma", {"proxy-ws": "wrong"}).to_json()
    suites = ET.fromstring(junit_xml([run]))
    failure = suites[0][0].find("failure")
    assert failure is not None and failure.get("message") == "because <b>"
    assert "because &lt;b&gt;" in report_html([run])


def test_prerequisites_name_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from tunnelws_testnet.harness import check_prerequisites

    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert check_prerequisites(scenario("proxy-ws")) == (
        "needs root (network namespaces and nftables)"
    )
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr("shutil.which", lambda name: None if name == "squid" else f"/x/{name}")
    monkeypatch.setattr("os.access", lambda path, mode: False)
    assert check_prerequisites(scenario("ports-443-only-ws")) == "squid is not installed"
    assert check_prerequisites(scenario("proxy-ws")) is None


def test_proxy_urls_carry_scheme_port_and_encoded_windows_user() -> None:
    assert _proxy_url(scenario("auth-ntlm")) == (
        "http://CORP%5Calice:ntlm-p%40ss%2Fw%25rd%21@10.77.1.1:3128"
    )
    assert _proxy_url(scenario("socks5h")) == "socks5h://sockuser:s0cks-pass-7@10.77.1.1:1080"
    assert _proxy_url(scenario("socks5-local-dns")).startswith("socks5://")
    assert _proxy_url(scenario("https-proxy")) == "https://10.77.1.1:3128"


def test_client_env_per_configuration(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    socks = _client_env(scenario("socks5h"), ca, "hi")
    # Only ALL_PROXY: an http(s)_proxy would win over it.
    assert [k for k in socks if "proxy" in k.lower()] == ["ALL_PROXY"]
    assert socks["SSL_CERT_FILE"] == str(ca)
    pac = _client_env(scenario("pac-failover"), ca, "hi", pac_url="pac+file:///x/proxy.pac")
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        assert pac[name] == "pac+file:///x/proxy.pac"
    # Every per-scheme name a library reads, both cases: aiohttp and Node's
    # proxy-from-env read ws(s)_proxy, curl and urllib http(s)_proxy.
    both = _client_env(scenario("proxy-ws"), ca, "hi")
    named = {k for k in both if k.lower().endswith("_proxy")}
    assert named == {
        f"{n}_proxy".upper() if upper else f"{n}_proxy"
        for n in ("http", "https", "ws", "wss")
        for upper in (False, True)
    }
    upper = _client_env(scenario("proxy-env-upper"), ca, "hi")
    assert {k for k in upper if k.lower().endswith("_proxy")} == {
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "WS_PROXY",
        "WSS_PROXY",
    }
    # SOCKS as curl and python-websockets document it: in the scheme variables.
    documented = _client_env(scenario("socks5h-proxy-variables"), ca, "hi")
    assert (
        documented["https_proxy"]
        == documented["wss_proxy"]
        == _proxy_url(scenario("socks5h-proxy-variables"))
    )
    assert "ALL_PROXY" not in documented
    # Kerberos: the proxy by name (a ticket names a host), no credentials.
    assert _proxy_url(scenario("auth-negotiate")) == "http://proxy.corp.test:3128"
    system = _client_env(scenario("tls-intercept-system-store"), None, "hi")
    assert not {"SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"} & set(
        system
    )
    assert system["https_proxy"] == "http://10.77.1.1:3128"


def test_wpad_hosts_give_the_client_a_domain(monkeypatch: pytest.MonkeyPatch) -> None:
    from tunnelws_testnet.harness import _network

    monkeypatch.setattr(_network.socket, "gethostname", lambda: "laptop.example.org")
    assert _network._wpad_hosts() == [
        ("10.77.1.2", "laptop.corp.test laptop.example.org"),
        ("10.77.1.1", "wpad.corp.test wpad"),
    ]


def test_pac_script_lists_the_dead_proxy_first() -> None:
    script = pac_script(3128)
    assert "function FindProxyForURL(url, host)" in script
    assert '"PROXY 10.77.1.1:3130; PROXY 10.77.1.1:3128; DIRECT"' in script
    # The dead proxy's port is rejected with a reset and counted.
    rules = ruleset(Firewall.REJECT)
    assert 'tcp dport 3130 ct state new counter name "dead_proxy" reject with tcp reset' in rules


def test_install_system_ca_copies_the_store_and_appends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tunnelws_testnet.harness import _netns

    system = tmp_path / "etc-ssl"
    (system / "certs").mkdir(parents=True)
    (system / "private").mkdir()
    (system / "private" / "key.pem").write_text("KEY")
    (system / "certs" / "ca-certificates.crt").write_text("SYSTEM-CA")  # no final newline
    (system / "certs" / "abcd.0").symlink_to("/usr/share/ca-certificates/x.crt")
    monkeypatch.setattr(_netns, "SYSTEM_SSL", system)
    monkeypatch.setattr(_netns, "NETNS_ETC", tmp_path / "netns")
    corporate = tmp_path / "corp.pem"
    corporate.write_text("CORP-CA\n")
    install_system_ca("tws-1-1-c", corporate)
    copy = tmp_path / "netns" / "tws-1-1-c" / "ssl"
    assert (copy / "certs" / "ca-certificates.crt").read_text() == "SYSTEM-CA\nCORP-CA\n"
    assert (copy / "certs" / "abcd.0").is_symlink()
    assert not (copy / "private").exists()
    assert (system / "certs" / "ca-certificates.crt").read_text() == "SYSTEM-CA"


def test_ntlm_messages_from_the_companion_log() -> None:
    log = "\n".join(
        json.dumps(record)
        for record in [
            {"event": "auth-required", "method": "CONNECT", "target": "a:1", "status": 407},
            {"event": "auth-message", "client": "10.77.1.2:5000", "ntlm": {"type": 1}},
            {"event": "auth-message", "client": "10.77.1.2:5000", "ntlm": {"type": 2}},
            {"event": "auth-message", "client": "10.77.1.2:5001", "ntlm": {"type": 3}},
            {"event": "auth-message", "client": "10.77.1.2:5001", "ntlm": "garbled"},
        ]
    )
    messages = parse_ntlm_messages(log)
    assert [(m.connection, m.type) for m in messages] == [
        ("10.77.1.2:5000", 1),
        ("10.77.1.2:5000", 2),
        ("10.77.1.2:5001", 3),
    ]
    split = Observation(ntlm_messages=messages)
    assert not split.ntlm_handshake_on_one_connection()
    ntlm = scenario("auth-ntlm")
    assert any("share one connection" in p for p in scenario_problems(ntlm, split, True))
    one = Observation(ntlm_messages=[NtlmMessage("c:1", t) for t in (1, 2, 3)])
    assert one.ntlm_handshake_on_one_connection()
    assert scenario_problems(ntlm, one, True) == []


def test_socks_proxy_logs() -> None:
    pproxy = parse_pproxy_log(
        "Serving on ipv? 10.77.1.1:1080 by socks5 \n"
        "socks5 10.77.1.2:40000 -> origin.corp.test:8080\n"
        "Unauthorized SOCKS b'u':b'x' from 10.77.1.2\n"
    )
    assert [(r.method, r.target) for r in pproxy] == [("CONNECT", "origin.corp.test:8080")]
    micro = parse_microsocks_log("client[4] 10.77.1.2: connected to origin.corp.test:8080\n")
    assert [(r.method, r.target) for r in micro] == [("CONNECT", "origin.corp.test:8080")]


def test_flags_and_problems_of_the_new_scenarios() -> None:
    # socks5:// must resolve locally: its lookups are expected, not a flag...
    assert flags_for(scenario("socks5-local-dns"), Observation(dns_queries=2)) == []
    # ...while socks5h:// leaves names to the proxy.
    assert flags_for(scenario("socks5h"), Observation(dns_queries=1)) == ["local-dns"]
    connects = [ProxyRequest("CONNECT", f"{scenario('auth-ntlm').origin_host}:1", 407)] * 3
    assert flags_for(scenario("auth-ntlm"), Observation(proxy_requests=connects)) == []
    assert flags_for(scenario("auth-basic"), Observation(proxy_requests=connects)) == ["auth-loop"]
    assert "auth-loop" in flags_for(
        scenario("auth-ntlm-close"), Observation(proxy_requests=[*connects, *connects])
    )
    pac = scenario("pac-failover")
    good = [ProxyRequest("CONNECT", "10.77.2.2:8080", 200)]
    assert (
        scenario_problems(pac, Observation(proxy_requests=good, dead_proxy_attempts=1), True) == []
    )
    skipped_dead = scenario_problems(pac, Observation(proxy_requests=good), True)
    assert any("never tried" in p for p in skipped_dead)
    twice = scenario_problems(
        pac, Observation(proxy_requests=good * 2, dead_proxy_attempts=1), True
    )
    assert twice == ["proxy should have seen exactly 1 CONNECT(s), saw 2"]


def _names_in(pem: Path) -> set[str]:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(name.value) for name in names}


def test_origin_and_proxy_have_certificates_of_their_own(tmp_path: Path) -> None:
    """Each covers exactly its own names (no localhost either), so a client
    checking the origin's certificate against another name fails."""
    ca = make_harness_ca(tmp_path)
    assert _names_in(ca.origin.cert_pem_path) == set(ORIGIN_CERT_NAMES)
    assert _names_in(ca.proxy_cert) == set(PROXY_CERT_NAMES)
    assert not set(ORIGIN_CERT_NAMES) & set(PROXY_CERT_NAMES)
    assert ca.proxy_key.stat().st_mode & 0o077 == 0


def test_scenarios_are_standard_or_name_their_extension() -> None:
    extensions = {s.id: s.extension for s in CATALOGUE if s.extension is not None}
    assert {s.score for s in CATALOGUE} == {"standard", "extension"}
    # tunnelws's own conventions, each named.
    assert extensions["no-proxy-cidr"].name == "NO_PROXY_CIDR"
    assert extensions["proxy-huge-headers"].name == "HEADER_CAP"
    assert {extensions[s].name for s in ("socks5h", "socks5h-microsocks")} == {"SOCKS_IN_ALL_PROXY"}
    assert {extensions[s].name for s in ("pac-failover", "pac-http-failover", "pac-wpad")} == {
        "PAC_URL"
    }
    # ...and the same SOCKS proxy the way clients document it is standard.
    assert scenario("socks5h-proxy-variables").score == "standard"
    assert scenario("auth-negotiate").score == "standard"


def test_kerberos_expectation_and_the_companion_log() -> None:
    log = "\n".join(
        json.dumps(record)
        for record in (
            {"event": "auth-required", "status": 407, "user": None},
            {"event": "tunnel", "user": "alice@TUNNELWS.TEST", "mechanism": "kerberos"},
            {"event": "tunnel", "user": "alice@corp", "credentials": True},  # Basic
        )
    )
    seen = parse_authentications(log)
    assert seen == [("alice@TUNNELWS.TEST", "kerberos")]
    negotiate = scenario("auth-negotiate")
    assert scenario_problems(negotiate, Observation(authenticated=seen), passed=True) == []
    by_ntlm = Observation(authenticated=[("CORP\\alice", "ntlm")])
    [problem] = scenario_problems(negotiate, by_ntlm, passed=True)
    assert "should have authenticated alice@TUNNELWS.TEST by kerberos" in problem
