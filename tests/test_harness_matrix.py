"""The compatibility matrix in CI: two third-party clients through the catalogue.

python-websockets (asyncio) and websocket-client go through the real harness
(network namespaces, nftables, real proxies) via their adapters in
``proxy/adapters/``, and each verdict must equal the table below, recorded
from real runs (``proxy/matrix.py``, see docs/compatibility.md). A change in
either library, in an adapter or in the harness's judging shows up here as a
changed cell.

The tables name their scenarios explicitly: scenarios added to the catalogue
later are not run here until someone records their outcome (a new id does not
fail this test), while a scenario renamed or removed does fail it.

Needs root, ``ip`` and ``nft`` (and squid/tinyproxy for their scenarios):
skipped on a laptop without them, failing under CI=true.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import IN_CI, require_binary
from matrix import background_hosts, cell, error_label, failure_label, render
from tunnelws_testnet.harness import CATALOGUE, ClientSpec, run_client, select

ADAPTERS = Path(__file__).resolve().parent.parent / "proxy" / "adapters"

# The catalogue's scenarios at the time the tables were recorded. Scenarios
# added since are not run here until their outcomes are recorded below.
SCENARIOS = (
    "open-direct",
    "blocked-reject",
    "blocked-blackhole",
    "proxy-ws",
    "proxy-wss",
    "proxy-env-upper",
    "proxy-env-all",
    "no-proxy-name",
    "no-proxy-cidr",
    "proxy-no-dns",
    "proxy-ipv6-target",
    "https-proxy",
    "auth-basic",
    "auth-basic-missing",
    "auth-basic-wrong",
    "auth-407-close",
    "auth-digest",
    "ports-443-only-wss",
    "ports-443-only-ws",
    "domain-deny",
    "proxy-http10",
    "proxy-pproxy",
    "proxy-2xx-quirks",
    "proxy-dribble",
    "proxy-error-html",
    "proxy-garbage",
    "proxy-close",
    "proxy-silent",
    "proxy-huge-headers",
    "transparent-80-ws",
    "transparent-80-wss",
    "tls-intercept-untrusted",
    "tls-intercept-trusted",
    "idle-timeout",
    "tunnel-reset",
    "slow-link",
    "bandwidth-limit",
)

# The wrong cells of each client's column, as docs/compatibility.md labels
# them (matrix.failure_label: the network's flags, or what the library's error
# says); every other scenario above must be correct.
WRONG: dict[str, dict[str, str]] = {
    "websockets-asyncio": {
        "proxy-env-all": "direct-attempt",  # ALL_PROXY is never read
        "no-proxy-cidr": "used proxy",  # no_proxy matches name suffixes only
        "auth-digest": "407",  # Basic only
        "proxy-huge-headers": "passed",  # an 80 KiB reply header block is accepted
        "idle-timeout": "closed",  # no keepalive pings by default
    },
    "websocket-client": {
        "proxy-env-all": "direct-attempt",
        "proxy-ipv6-target": "400",  # CONNECT fd77:2::2:8080, no brackets
        "https-proxy": "closed",  # plain HTTP to an https:// proxy
        "auth-digest": "407",
        "proxy-huge-headers": "passed",
        "idle-timeout": "closed",
    },
}

CLIENTS = {
    "websockets-asyncio": ClientSpec(
        "websockets-asyncio", (sys.executable, str(ADAPTERS / "python_websockets_asyncio.py"))
    ),
    "websocket-client": ClientSpec(
        "websocket-client", (sys.executable, str(ADAPTERS / "websocket_client.py"))
    ),
}


@pytest.fixture
def netns_capable() -> None:
    require_binary("ip")
    require_binary("nft")
    if os.geteuid() != 0:
        message = "the OS-level harness needs root (network namespaces, nftables)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def outcome(result: dict[str, Any]) -> str:
    """A matrix cell in words: correct, skipped, error, or the wrong cell's label."""
    return failure_label(result) if result["verdict"] == "wrong" else str(result["verdict"])


def test_tables_name_catalogue_scenarios() -> None:
    known = {s.id for s in CATALOGUE}
    assert set(SCENARIOS) <= known, f"not in the catalogue: {set(SCENARIOS) - known}"
    for client, wrong in WRONG.items():
        assert set(wrong) <= set(SCENARIOS), client


@pytest.mark.timeout(170)
@pytest.mark.usefixtures("netns_capable")
@pytest.mark.parametrize("name", sorted(CLIENTS))
async def test_client_verdicts_match_the_matrix(name: str, tmp_path: Path) -> None:
    pytest.importorskip("websockets" if name == "websockets-asyncio" else "websocket")
    scenarios = select(list(SCENARIOS))
    for binary in {b for s in scenarios for b in s.requires}:
        require_binary(binary)
    begin = time.monotonic()
    run = await run_client(CLIENTS[name], scenarios, workdir=tmp_path)
    elapsed = time.monotonic() - begin
    results = run.to_json()["results"]
    expected = {s: WRONG[name].get(s, "correct") for s in SCENARIOS}
    got = {r["scenario"]: outcome(r) for r in results}
    changed = {
        r["scenario"]: f"expected {expected[r['scenario']]}, got {got[r['scenario']]}: "
        f"{r['reasons']} {r['stderr'][-300:]!r}"
        for r in results
        if got[r["scenario"]] != expected[r["scenario"]]
    }
    assert changed == {}
    assert elapsed < 150, f"{name} took {elapsed:.0f} s through {len(scenarios)} scenarios"


# -- proxy/matrix.py's reading of results, on hand-made results ------------------


def result(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "scenario": "proxy-ws",
        "expect": "pass",
        "verdict": "wrong",
        "reasons": [],
        "flags": [],
        "exit_code": 1,
        "category": None,
        "timed_out": False,
        "time_limit": 8.0,
        "url": "ws://10.77.2.2:8080/echo",
        "env": {"http_proxy": "http://10.77.1.1:3128"},
        "stdout": "",
        "stderr": "",
        "proxy_log": [],
        "observation": {"dns_queries": 0, "direct_attempts": 0, "proxy_requests": []},
    }
    return {**base, **fields}


@pytest.mark.parametrize(
    ("error", "label"),
    [
        ("x: WebSocketProxyException: failed CONNECT via proxy status: 400", "400"),
        ("x: InvalidProxyStatus: proxy rejected connection: HTTP 407", "407"),
        ("x: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed", "tls"),
        ("x: gaierror: [Errno -3] Temporary failure in name resolution", "dns"),
        ("x: WebSocketConnectionClosedException: Connection to remote host was lost.", "closed"),
        ("x: something else entirely", None),
    ],
)
def test_error_labels(error: str, label: str | None) -> None:
    assert error_label(error) == label


def test_a_browsers_background_requests_are_told_apart() -> None:
    background = {"method": "POST", "target": "http://update.example/x", "status": 502}
    tunnel = {"method": "CONNECT", "target": "10.77.2.2:8080", "status": 200}
    flagged = result(
        exit_code=0,
        flags=["absolute-form"],
        reasons=["absolute-form: sent an absolute-form request"],
        observation={"proxy_requests": [background, tunnel]},
    )
    assert background_hosts(flagged) == ["update.example"]
    assert cell(flagged) == "✘ background*"
    # The same flag for a request to the origin is the client's own doing.
    own = {"method": "GET", "target": "ws://10.77.2.2:8080/echo", "status": 400}
    flagged["observation"] = {"proxy_requests": [background, own]}
    assert background_hosts(flagged) == []
    assert cell(flagged) == "✘ absolute-form"


def test_explanations_come_from_the_artifacts(tmp_path: Path) -> None:
    ignored = result(
        stderr="x: ConnectionRefusedError: refused\n",
        flags=["direct-attempt"],
        observation={"direct_attempts": 1, "proxy_requests": []},
    )
    digest = result(
        scenario="auth-digest",
        stderr="x: HTTP 407\n",
        observation={
            "proxy_requests": [{"method": "CONNECT", "target": "10.77.2.2:8080", "status": 407}]
        },
        proxy_log=[
            '{"status": 407, "credentials": true, "detail": "scheme \'Basic\' not accepted"}'
        ],
    )
    reset = result(scenario="tunnel-reset", expect="fail:connection-lost", timed_out=True)
    correct = result(scenario="open-direct", verdict="correct", exit_code=0)
    run = {
        "client": "x",
        "seconds": 3.0,
        "counts": {"correct": 1, "wrong": 3, "skipped": 0, "error": 0},
        "results": [correct, ignored, digest, reset],
    }
    page = render([run], {}, ["tunnelws harness run"], tmp_path)
    assert "| proxy-ws | pass | ✘ direct-attempt |" in page
    assert "| open-direct | pass | ✔ |" in page
    assert "ignores the proxy in `http_proxy`; the proxy saw no request" in page
    assert "connected to the origin directly" in page
    assert "no Digest proxy authentication: it sent credentials the proxy refused" in page
    assert "scheme 'Basic' not accepted" in page
    assert "does not notice a tunnel reset while idle" in page
    assert "| **correct** | | 1/4 |" in page
