"""The OS-level harness for real: namespaces, nftables, real proxies, real clients.

Needs root, ``ip`` and ``nft`` (skipped on a laptop without them, failing
under CI=true). tunnelws's own client goes through the whole catalogue; the
deliberately wrong clients in ``tunnelws_testnet.harness.clients.misbehaving``
prove that verdicts and flags can fail; the rest checks time limits and that
nothing is left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import require_binary, skip_or_fail
from tunnelws_testnet.harness import (
    BY_ID,
    CATALOGUE,
    ClientSpec,
    ProxySpec,
    Scenario,
    builtin_client,
    run_client,
    select,
)

TUNNELWS_CLIENT = builtin_client()
NETNS_DIRS = (Path("/run/netns"), Path("/etc/netns"))

# Scenarios where tunnelws's client is known not to behave as the catalogue
# says, with the reason. Empty: every scenario is correct.
KNOWN_GAPS: dict[str, str] = {}


@pytest.fixture(autouse=True)
def netns_capable() -> None:
    require_binary("ip")
    require_binary("nft")
    if os.geteuid() != 0:
        skip_or_fail("the OS-level harness needs root (network namespaces, nftables)")


def misbehaving(mode: str) -> ClientSpec:
    return ClientSpec(
        mode, (sys.executable, "-m", "tunnelws_testnet.harness.clients.misbehaving", mode)
    )


def our_namespaces(pid: int | None = None) -> list[str]:
    prefix = f"tws-{os.getpid() if pid is None else pid}-"
    return [
        p.name for d in NETNS_DIRS if d.is_dir() for p in d.iterdir() if p.name.startswith(prefix)
    ]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.timeout(360)
async def test_tunnelws_client_through_the_whole_catalogue(tmp_path: Path) -> None:
    """With its defaults: idle-timeout passes on the default 20 s pings."""
    for binary in {b for s in CATALOGUE for b in s.requires}:
        require_binary(binary)
    begin = time.monotonic()
    run = await run_client(TUNNELWS_CLIENT, list(CATALOGUE), workdir=tmp_path)
    elapsed = time.monotonic() - begin
    wrong = {
        r.scenario: r.reasons
        for r in run.results
        if r.verdict != "correct" and r.scenario not in KNOWN_GAPS
    }
    assert wrong == {}
    by_id = {r.scenario: r for r in run.results}
    # The failure categories were checked, not just "non-zero".
    assert by_id["auth-basic-missing"].category == "proxy-auth"
    # Where WebSocket cannot pass, the built-in client (which has the HTTP
    # fallback) is judged on the fallback's expectation and passes through it:
    # absolute-form fallback requests, never flagged, and no GET ws://.
    for sid in ("ports-443-only-ws", "forward-only-ws", "squid-default-ws", "buffering-proxy"):
        assert by_id[sid].expect == "pass" and by_id[sid].exit_code == 0, sid
        seen = [r["target"] for r in by_id[sid].observation["proxy_requests"]]
        assert any("/echo/_tunnelws/1/open" in t for t in seen), (sid, seen)
        assert not any(t.startswith("ws://") for t in seen), (sid, seen)
    assert by_id["domain-deny"].category == "proxy-refused"
    assert by_id["transparent-80-ws"].expect == "pass"
    assert by_id["tunnel-reset"].category == "connection-lost"
    # What the network saw backs the verdicts up.
    no_dns = by_id["proxy-no-dns"].observation
    assert no_dns["dns_queries"] == 0 and no_dns["direct_attempts"] == 0
    assert [r["target"] for r in no_dns["proxy_requests"]] == ["origin.corp.test:8080"]
    auth = by_id["auth-basic"].observation
    # tunnelws sends Basic credentials from the proxy URL at once (no 407 first).
    assert [r["status"] for r in auth["proxy_requests"]] == [200]
    assert auth["origin_requests"] and not any(
        r["proxy_authorization"] or r["secret_seen"] for r in auth["origin_requests"]
    )
    # Requests reached the origin through the proxy (its origin-side address).
    assert {r["peer"] for r in auth["origin_requests"]} == {"10.77.2.1"}
    assert {r["peer"] for r in by_id["open-direct"].observation["origin_requests"]} == {"10.77.1.2"}
    assert by_id["proxy-http10"].observation["proxy_requests"][0]["method"] == "CONNECT"
    # NTLM: probe, type 1 and type 3 on one connection; with the proxy closing
    # after each 407 the handshake cannot finish and no loop follows.
    ntlm = by_id["auth-ntlm"].observation
    assert [m["type"] for m in ntlm["ntlm_messages"]] == [1, 2, 3]
    assert len({m["connection"] for m in ntlm["ntlm_messages"]}) == 1
    assert [r["status"] for r in ntlm["proxy_requests"]] == [407, 407, 200]
    assert by_id["auth-ntlm"].env["http_proxy"].startswith("http://CORP%5Calice:***@")
    assert by_id["auth-ntlm-close"].category == "proxy-auth"
    assert by_id["auth-ntlm-close"].observation["connect_attempts"] <= 3
    # SOCKS5: the proxy resolved the name; socks5:// tried to resolve locally.
    for socks in ("socks5h", "socks5h-microsocks"):
        seen = by_id[socks].observation
        assert seen["dns_queries"] == 0 and seen["direct_attempts"] == 0
        assert [r["target"] for r in seen["proxy_requests"]] == ["origin.corp.test:8080"]
        assert [k for k in by_id[socks].env if "proxy" in k.lower()] == ["ALL_PROXY"]
    local = by_id["socks5-local-dns"]
    assert local.category == "connect" and local.observation["dns_queries"] > 0
    assert local.observation["proxy_requests"] == []
    # PAC: the closed port first (reset), then one CONNECT through the proxy.
    for pac in ("pac-failover", "pac-http-failover", "pac-wpad"):
        seen = by_id[pac].observation
        assert seen["dead_proxy_attempts"] >= 1 and seen["connect_attempts"] == 1
        assert seen["dns_queries"] == 0
        assert by_id[pac].env["https_proxy"].startswith("pac+")
    # WPAD found the script by the client's domain, through its hosts file.
    assert '"GET /wpad.dat HTTP/1.1" 200' in (tmp_path / "pac-wpad" / "pac-server.out").read_text()
    # The system store scenario gave the client no CA variable at all.
    assert not {"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"} & set(
        by_id["tls-intercept-system-store"].env
    )
    # Negotiate with a ticket from the real KDC in the router: the proxy
    # authenticated alice by Kerberos, after one 407 to the bare CONNECT.
    negotiate = by_id["auth-negotiate"]
    assert negotiate.observation["authenticated"] == [
        {"user": "alice@TUNNELWS.TEST", "mechanism": "kerberos"}
    ]
    assert [r["status"] for r in negotiate.observation["proxy_requests"]] == [407, 200]
    assert negotiate.env["http_proxy"] == "http://proxy.corp.test:3128"
    kdc_log = (tmp_path / "auth-negotiate" / "kdc.log").read_text()
    assert "alice@TUNNELWS.TEST for HTTP/proxy.corp.test@TUNNELWS.TEST" in kdc_log
    # SOCKS as python-websockets documents it: socks5h:// in the scheme variables.
    socks_vars = by_id["socks5h-proxy-variables"]
    assert socks_vars.env["https_proxy"].startswith("socks5h://")
    assert socks_vars.observation["dns_queries"] == 0
    # The idle wait outlasted the proxy's idle limit: only pings kept the tunnel.
    idle = by_id["idle-timeout"]
    assert idle.client_seconds > 40 and idle.observation["connect_attempts"] == 1
    # Secrets never reach the report.
    assert "p@ss" not in json.dumps(run.to_json())
    idle_wait = sum(s.idle or 0 for s in CATALOGUE)
    assert elapsed < 200 + idle_wait, f"the catalogue took {elapsed:.0f} s"
    assert our_namespaces() == []


FALLBACK_SECTION = [s.id for s in CATALOGUE if s.section.startswith("H.")]


async def test_clients_are_judged_on_the_expectation_that_applies(tmp_path: Path) -> None:
    """Without a fallback, section H and the scenarios the fallback changes keep
    their native expectations; a client declaring a fallback it does not use is
    wrong there."""
    assert len(FALLBACK_SECTION) == 5
    ids = ["ports-443-only-ws", "transparent-80-ws", *FALLBACK_SECTION]
    argv = (*TUNNELWS_CLIENT.argv, "--fallback", "never")
    native = ClientSpec("native", argv, exit_codes=True)
    run = await run_client(native, select(ids), workdir=tmp_path / "native")
    got = {r.scenario: (r.verdict, r.category) for r in run.results}
    assert got == {s: ("correct", BY_ID[s].expected_category) for s in ids}, got
    claims = ClientSpec("claims-fallback", argv, exit_codes=True, fallback=True)
    run = await run_client(claims, select(FALLBACK_SECTION[:2]), workdir=tmp_path / "claims")
    assert [(r.expect, r.verdict) for r in run.results] == [("pass", "wrong")] * 2


@pytest.mark.parametrize(
    ("mode", "scenario_id", "flag"),
    [
        ("direct", "proxy-ws", "direct-attempt"),
        ("direct", "proxy-no-dns", "local-dns"),
        ("absolute", "proxy-ws", "absolute-form"),
        ("leak", "auth-basic", "credentials-at-origin"),
        ("loop", "auth-basic-wrong", "auth-loop"),
    ],
)
async def test_misbehaving_clients_are_flagged(
    tmp_path: Path, mode: str, scenario_id: str, flag: str
) -> None:
    run = await run_client(misbehaving(mode), select([scenario_id]), workdir=tmp_path)
    [result] = run.results
    assert result.verdict == "wrong"
    assert flag in result.flags
    assert any(reason.startswith(flag) for reason in result.reasons)


async def test_origin_certificate_checked_against_the_proxy_name_is_caught(
    tmp_path: Path,
) -> None:
    """The origin and https:// proxies have certificates of their own: a client
    verifying the origin's certificate against the proxy's address fails."""
    run = await run_client(misbehaving("proxy-name"), select(["proxy-wss"]), workdir=tmp_path)
    [result] = run.results
    assert result.verdict == "wrong" and result.exit_code == 1
    assert "certificate verify failed" in result.stderr
    assert "IP address mismatch" in result.stderr


async def test_direct_client_is_correct_where_direct_is_right(tmp_path: Path) -> None:
    # The flags depend on the scenario: going direct is correct without a proxy.
    run = await run_client(
        misbehaving("direct"), select(["open-direct", "no-proxy-cidr"]), workdir=tmp_path
    )
    assert [(r.verdict, r.flags) for r in run.results] == [("correct", []), ("correct", [])]


async def test_hanging_client_is_killed_at_the_limit(tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    script = f"echo $$ > {pid_file}; sleep 60 & echo $! >> {pid_file}; wait"
    client = ClientSpec("hang", ("sh", "-c", script))
    [scenario] = select(["blocked-reject"])
    begin = time.monotonic()
    run = await run_client(client, [scenario], workdir=tmp_path / "work")
    [result] = run.results
    assert result.verdict == "wrong" and result.timed_out
    assert scenario.time_limit <= result.client_seconds < scenario.time_limit + 2
    assert time.monotonic() - begin < scenario.time_limit + 6
    pids = [int(p) for p in pid_file.read_text().split()]
    assert len(pids) == 2 and not any(alive(p) for p in pids)
    assert our_namespaces() == []


async def test_wrong_failure_category_is_wrong(tmp_path: Path) -> None:
    client = ClientSpec("exit1", ("sh", "-c", "exit 1"), exit_codes=True)
    run = await run_client(client, select(["blocked-reject"]), workdir=tmp_path)
    [result] = run.results
    assert result.verdict == "wrong"
    assert "expected category connect (exit 4), got exit 1" in result.reasons[0]


def test_cli_run_writes_reports_and_fails(tmp_path: Path) -> None:
    report = tmp_path / "report"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "tunnelws",
            "harness",
            "run",
            "--scenario",
            "open-direct",
            "--scenario",
            "proxy-ws",
            "--report",
            str(report),
            "--",
            *misbehaving("direct").argv,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 1, completed.stderr
    assert "[ 2/2] proxy-ws" in completed.stdout and "direct-attempt" in completed.stdout
    data = json.loads((report / "results.json").read_text())
    [run] = data["runs"]
    assert run["client"] == Path(sys.executable).name
    assert [r["verdict"] for r in run["results"]] == ["correct", "wrong"]
    assert "<failure" in (report / "junit.xml").read_text()
    page = (report / "report.html").read_text()
    assert "id='d-" in page and "Connection refused" in page
    assert (report / "artifacts").is_dir()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_cli_signal_tears_everything_down(stop: signal.Signals) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tunnelws", "harness", "run", "--scenario", "idle-timeout"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while not our_namespaces(process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert our_namespaces(process.pid), "the run never built its namespaces"
        time.sleep(1.0)  # the client is connected and idling
        process.send_signal(stop)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130
    assert "torn down" in stderr
    assert our_namespaces(process.pid) == []


def test_cleanup_removes_stale_namespaces() -> None:
    # No process ever has a PID above pid_max: a harness that surely is gone.
    dead_pid = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    name = f"tws-{dead_pid}-1-c"
    subprocess.run(["ip", "netns", "add", name], check=True)
    Path(f"/etc/netns/{name}").mkdir(parents=True, exist_ok=True)
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "tunnelws", "harness", "cleanup"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert completed.returncode == 0
        assert f"removed {name}" in completed.stdout
        assert our_namespaces(dead_pid) == []
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


async def test_system_store_scenario_depends_on_the_installed_ca(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the corporate CA in the namespace's /etc/ssl the same client
    # fails TLS: the pass above came from the system store, not from elsewhere.
    from tunnelws_testnet.harness import _network

    monkeypatch.setattr(_network, "install_system_ca", lambda name, ca_pem: None)
    run = await run_client(
        TUNNELWS_CLIENT, select(["tls-intercept-system-store"]), workdir=tmp_path
    )
    [result] = run.results
    assert result.verdict == "wrong" and result.category == "tls"
    assert our_namespaces() == []


def test_list_prints_the_catalogue() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "tunnelws", "harness", "list"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    for s in CATALOGUE:
        assert s.id in completed.stdout


async def test_network_that_cannot_start_is_an_error_not_a_crash(tmp_path: Path) -> None:
    broken = Scenario(
        "broken-proxy",
        "test",
        "a proxy that cannot start",
        "pass",
        proxy=ProxySpec(options=("--reply-status", "not-a-number")),
    )
    run = await run_client(TUNNELWS_CLIENT, [broken, *select(["open-direct"])], workdir=tmp_path)
    assert [r.verdict for r in run.results] == ["error", "correct"]
    assert "companion proxy exited with status 2" in run.results[0].reasons[0]
    assert our_namespaces() == []


WEBSOCKETS_ADAPTER = (
    sys.executable,
    str(Path(__file__).resolve().parent.parent / "proxy/adapters/python_websockets_asyncio.py"),
)


async def test_a_client_through_the_local_proxy_gets_only_its_address(tmp_path: Path) -> None:
    """python-websockets alone fails NTLM (Basic only), a SOCKS proxy in
    ALL_PROXY (never read) and PAC; through ``tunnelws local-proxy`` it gets
    only http(s)_proxy and the pair passes, each tunnel along the scenario's route."""
    pytest.importorskip("websockets")
    ids = ["auth-ntlm", "socks5h", "pac-failover"]
    alone = ClientSpec("websockets", WEBSOCKETS_ADAPTER)
    run = await run_client(alone, select(ids), workdir=tmp_path / "alone")
    assert [r.verdict for r in run.results] == ["wrong"] * 3
    helped = ClientSpec("websockets+lp", WEBSOCKETS_ADAPTER, through_local_proxy=True)
    run = await run_client(helped, select(ids), workdir=tmp_path / "helped")
    assert [(r.scenario, r.verdict) for r in run.results] == [(s, "correct") for s in ids], [
        r.reasons for r in run.results
    ]
    for result in run.results:
        variables = {k: v for k, v in result.env.items() if not k.startswith("TUNNELWS_")}
        proxy = variables["http_proxy"]
        assert proxy.startswith("http://127.0.0.1:")
        assert {k for k, v in variables.items() if v == proxy} == {
            "http_proxy",
            "https_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
        }
        assert set(variables) - {"http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"} <= {
            "SSL_CERT_FILE",
            "REQUESTS_CA_BUNDLE",
            "NODE_EXTRA_CA_CERTS",
        }
        [entry] = result.local_proxy_log
        assert entry["method"] == "CONNECT" and entry["status"] == 200
        assert entry["route"] != "DIRECT" and entry["end"] == "closed"
    routes = [r.local_proxy_log[0]["route"] for r in run.results]
    assert routes[1].startswith("socks5h://") and routes[2].startswith("pac+file://")
    # The NTLM password the local proxy used never reaches the report.
    ntlm = BY_ID["auth-ntlm"].url_credentials
    assert ntlm is not None and ntlm[1] not in json.dumps(run.to_json())
    assert our_namespaces() == []


async def test_a_client_ignoring_the_proxy_variables_is_not_fixed(tmp_path: Path) -> None:
    client = ClientSpec("direct+lp", misbehaving("direct").argv, through_local_proxy=True)
    run = await run_client(client, select(["proxy-ws"]), workdir=tmp_path)
    [result] = run.results
    assert result.verdict == "wrong" and "direct-attempt" in result.flags
    assert result.local_proxy_log == []


def test_cli_through_local_proxy_needs_a_command() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "tunnelws", "harness", "run", "--through-local-proxy"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2
    assert "--through-local-proxy needs a client command" in completed.stderr
