"""The published compatibility matrix, re-verified in CI.

Every column of docs/compatibility.md (``proxy/matrix.py``'s clients: tunnelws,
its CLI and every adapter in ``proxy/adapters/``) goes through the real
harness (network namespaces, nftables, real proxies, a real KDC) on
:data:`SAMPLE`, scenarios from every section of the catalogue (the
local-proxy columns on the shorter :data:`LOCAL_PROXY_SAMPLE`), and each cell
must equal the published one: the verdict and its label (``✘ 407``,
``✘ direct-attempt``, ``✔ †``...), so a known failure is checked for its
reason, not just for failing. ``idle-timeout`` (40 idle seconds) runs for all
columns at once. A change in a library, an adapter or the harness's judging
shows up here as a changed cell; regenerate the page with ``proxy/matrix.py``.

The whole catalogue for every column takes about 35 minutes, so CI runs
this sample (a few minutes); ``tests/test_harness_run.py`` still takes
tunnelws's own client through every scenario.

Needs root, ``ip``, ``nft`` and every column's client: skipped on a laptop
without them, failing under CI=true.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import trio

import matrix
from conftest import require_binary, skip_or_fail
from tunnelws_testnet.harness import BY_ID, CATALOGUE, ScenarioResult, run_client, select

PAGE = Path(__file__).resolve().parent.parent / "docs" / "compatibility.md"
COLUMNS = {client.name: client for client in matrix.clients()}
IDLE = matrix.IDLE_SCENARIO
STAGGER = 1.0  # seconds between the idle-timeout columns' starts

# Scenarios re-run for every column: each section, and where the columns differ.
SAMPLE = (
    "blocked-reject",
    "proxy-wss",
    "proxy-env-all",
    "no-proxy-name",
    "no-proxy-cidr",
    "proxy-ipv6-target",
    "https-proxy",
    "auth-basic",
    "auth-digest",
    "auth-ntlm",
    "auth-negotiate",
    "proxy-http10",
    "proxy-huge-headers",
    "tls-intercept-system-store",
    "tunnel-reset",
    "socks5h",
    "socks5h-proxy-variables",
    "pac-failover",
    "pac-http-failover",
    "pac-wpad",
    "forward-only-ws",
)

# The local-proxy columns (the same adapters behind `tunnelws local-proxy`):
# where the local proxy changes a verdict, one way or the other, and where it
# cannot (a library that ignores http(s)_proxy, a client's own bug).
LOCAL_PROXY_SAMPLE = (
    "blocked-reject",
    "proxy-wss",
    "proxy-ipv6-target",
    "auth-digest",
    "auth-ntlm",
    "socks5h",
    "pac-failover",
)


def sample(name: str) -> tuple[str, ...]:
    return LOCAL_PROXY_SAMPLE if COLUMNS[name].through_local_proxy else SAMPLE


def published() -> dict[str, dict[str, str]]:
    return matrix.published_cells(PAGE.read_text())


def test_sample_covers_every_section_and_the_page_every_column() -> None:
    assert {BY_ID[s].section for s in SAMPLE} == {s.section for s in CATALOGUE}
    assert IDLE not in SAMPLE
    cells = published()
    assert list(cells) == list(COLUMNS), "regenerate docs/compatibility.md (proxy/matrix.py)"
    assert set(LOCAL_PROXY_SAMPLE) <= set(SAMPLE)
    for name, column in cells.items():
        missing = {*SAMPLE, IDLE} - set(column)
        assert not missing, f"{name}: the page lacks {sorted(missing)}"


@pytest.fixture
def netns_capable() -> None:
    require_binary("ip")
    require_binary("nft")
    if os.geteuid() != 0:
        skip_or_fail("the OS-level harness needs root (network namespaces, nftables)")


def _column(name: str) -> matrix.Client:
    client = COLUMNS[name]
    problem = client.missing()
    if problem:
        skip_or_fail(f"{name}: {problem}")
    return client


def _differences(results: list[ScenarioResult], expected: dict[str, str]) -> dict[str, str]:
    changed = {}
    for result in results:
        data: dict[str, Any] = result.to_json()
        got = matrix.cell(data)
        if got != expected.get(result.scenario):
            reasons = "; ".join(result.reasons)
            changed[result.scenario] = (
                f"published {expected.get(result.scenario)!r}, got {got!r}: {reasons} "
                f"{matrix.last_error(data)!r}"
            )
    return changed


@pytest.mark.timeout(420)
@pytest.mark.usefixtures("netns_capable")
@pytest.mark.parametrize("name", list(COLUMNS))
async def test_column_matches_the_published_matrix(name: str, tmp_path: Path) -> None:
    client = _column(name)
    scenarios = select(list(sample(name)))
    for binary in {b for s in scenarios for b in s.requires}:
        require_binary(binary)
    run = await run_client(matrix.client_spec(client), scenarios, workdir=tmp_path)
    assert _differences(run.results, published()[name]) == {}


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("netns_capable")
async def test_idle_timeout_matches_for_every_column_at_once(tmp_path: Path) -> None:
    """40 idle seconds behind a proxy dropping tunnels idle for 30 s: those with
    default keepalive pings pass, the others lose the tunnel. All columns run
    side by side (each in namespaces of its own), so it costs one wait."""
    columns = [_column(name) for name in COLUMNS]
    scenario = select([IDLE])
    results: dict[str, ScenarioResult] = {}

    async def one(client: matrix.Client, delay: float) -> None:
        # Staggered: fifteen networks (origin, proxy) starting in the same
        # second overload 2 cores; a second apart they overlap only in the wait.
        await trio.sleep(delay)
        spec = matrix.client_spec(client)
        run = await run_client(spec, scenario, workdir=tmp_path / client.name)
        results[client.name] = run.results[0]

    async with trio.open_nursery() as nursery:
        for index, client in enumerate(columns):
            nursery.start_soon(one, client, index * STAGGER)
    cells = published()
    changed = {
        name: diff
        for name, result in results.items()
        for diff in _differences([result], {IDLE: cells[name][IDLE]}).values()
    }
    assert changed == {}
    # tunnelws passes with its defaults: the library's and the CLI's 20 s pings.
    assert results["tunnelws"].verdict == results["tunnelws-cli"].verdict == "correct"
