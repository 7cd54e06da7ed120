"""proxy/matrix.py's reading of harness results, on hand-made results: cells,
labels, the two scores, the translation mark, explanations that name the
convention of an extension scenario, and the published page read back.

No root needed; tests/test_harness_matrix.py re-runs the real columns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from matrix import (
    background_hosts,
    cell,
    error_label,
    last_error,
    published_cells,
    render,
    scores,
    translations,
)


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
    assert "| proxy-ws | pass |  | ✘ direct-attempt |" in page
    assert "| open-direct | pass |  | ✔ |" in page
    assert "ignores the proxy in `http_proxy`; the proxy saw no request" in page
    assert "connected to the origin directly" in page
    assert "no Digest proxy authentication: it sent credentials the proxy refused" in page
    assert "scheme 'Basic' not accepted" in page
    assert "does not notice a tunnel reset while idle" in page
    assert "| **standard** | | | 1/4 |" in page


def _run(name: str, *results: dict[str, Any]) -> dict[str, Any]:
    counts = {"correct": 0, "wrong": 0, "skipped": 0, "error": 0}
    for r in results:
        counts[r["verdict"]] += 1
    return {"client": name, "seconds": 1.0, "counts": counts, "results": list(results)}


def test_translations_are_marked_and_never_taken_for_the_error() -> None:
    said = "aiohttp-proxy-arg: translated: https_proxy -> ws_connect(proxy=...)"
    passed = result(verdict="correct", exit_code=0, stderr=said + "\n")
    assert translations(passed) == ["https_proxy -> ws_connect(proxy=...)"]
    assert cell(passed) == "✔ †"
    assert last_error(passed) == ""
    failed = result(stderr=said + "\naiohttp-proxy-arg: ClientHttpProxyError: 407\n")
    assert cell(failed) == "✘ 407 †"
    assert last_error(failed) == "aiohttp-proxy-arg: ClientHttpProxyError: 407"
    assert cell(result(stderr="x: HTTP 407\n")) == "✘ 407"


def test_two_scores_and_the_convention_named(tmp_path: Path) -> None:
    cidr = "CIDR ranges in `no_proxy`"
    standard_ok = result(scenario="proxy-ws", verdict="correct", exit_code=0, extension=None)
    standard_bad = result(scenario="proxy-wss", stderr="x: HTTP 407\n", extension=None)
    used_proxy = result(
        scenario="no-proxy-cidr",
        exit_code=0,
        extension=cidr,
        reasons=["no_proxy should bypass the proxy, but it saw 1 for the origin"],
        env={"http_proxy": "http://10.77.1.1:3128", "no_proxy": "10.77.2.0/24"},
        observation={
            "proxy_requests": [{"method": "CONNECT", "target": "10.77.2.2:8080", "status": 200}]
        },
    )
    skipped = result(scenario="socks5h", verdict="skipped", extension="SOCKS")
    run = _run("x", standard_ok, standard_bad, used_proxy, skipped)
    assert scores(run["results"]) == {"standard": (1, 2), "extension": (0, 1)}
    page = render([run], {}, ["tunnelws harness run"], tmp_path, {"Python": "3.11.7"})
    assert "| **standard** | | | 1/2 |" in page
    assert "| **extension** | | | 0/1 |" in page
    assert "| no-proxy-cidr | pass | ext | ✘ used proxy |" in page
    assert f"it went through the proxy instead — no-proxy-cidr. *Extension: {cidr}.*" in page
    assert "| Python | 3.11.7 |" in page
    # The published page reads back cell for cell.
    assert published_cells(page) == {
        "x": {
            "proxy-ws": "✔",
            "proxy-wss": "✘ 407",
            "no-proxy-cidr": "✘ used proxy",
            "socks5h": "–",
        }
    }


def test_local_proxy_columns_are_compared_with_their_library(tmp_path: Path) -> None:
    """A `…+local-proxy` column is set against the library's own column: what
    the local proxy fixed, what stays wrong, and why (from its log)."""
    ntlm_alone = result(scenario="auth-ntlm", stderr="x: HTTP 407\n")
    ws_alone = result(scenario="proxy-ws", verdict="correct", exit_code=0)
    ntlm_helped = result(scenario="auth-ntlm", verdict="correct", exit_code=0, local_proxy_log=[{}])
    ignored = result(
        scenario="proxy-ws",
        reasons=["direct-attempt: connected (or tried) around the configured proxy"],
        flags=["direct-attempt"],
        local_proxy_log=[],
        observation={"dns_queries": 0, "direct_attempts": 3, "proxy_requests": []},
    )
    refused = result(
        scenario="proxy-ipv6-target",
        local_proxy_log=[{"error": "bad-request", "message": "expected HOST:PORT"}],
    )
    runs = [
        _run("node-ws", ntlm_alone, ws_alone),
        _run("node-ws+local-proxy", ntlm_helped, ignored, refused),
    ]
    page = render(runs, {}, [], tmp_path)
    assert (
        "- `node-ws`: 1/2 → 1/3 standard, 0/0 → 0/0 extension. Fixed: auth-ntlm. "
        "Never talked to the local proxy in 1 scenarios: it went direct or asked DNS, taking "
        "no `http(s)_proxy` for `ws(s)://` URLs (newly wrong: proxy-ws). "
        "Still wrong otherwise: proxy-ipv6-target."
    ) in page
    assert "`tunnelws local-proxy` saw no connection" in page
    assert "answered the library's request with `bad-request` — proxy-ipv6-target" in page
    # Third-party verdicts are the libraries' own: a local-proxy column is not one.
    assert "No third-party client is correct in: auth-ntlm" in page
