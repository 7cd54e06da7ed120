"""One scenario catalogue: every table keyed by scenario uses its ids.

The harness catalogue (``tunnelws_testnet.harness.CATALOGUE``) is the single
source of scenario ids and expectations. The in-process networks, ``check``'s
table, the compatibility matrix and the docs add what they need keyed by
those ids; these tests fail when one of them names an id the catalogue lacks,
disagrees with its expectation, or when docs/harness.md's table drifts from
the data.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pytest

import matrix
import test_check_scenarios
import test_harness_matrix
import test_harness_run
from conftest import skip_or_fail
from tunnelws_testnet.harness import BY_ID, CATALOGUE, EXIT_CODES
from tunnelws_testnet.harness._doc import update
from tunnelws_testnet.harness._scenarios import Extension
from tunnelws_testnet.inprocess import SCENARIOS

ROOT = Path(__file__).resolve().parent.parent


def _plugin_doc_ids() -> set[str]:
    """The ids in docs/pytest-plugin.md's table of in-process scenarios."""
    text = (ROOT / "docs" / "pytest-plugin.md").read_text()
    section = text.split("## Scenarios", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")][1:]
    return {name for row in rows for name in re.findall(r"`([a-z0-9-]+)`", row)}


TABLES: dict[str, Iterable[str]] = {
    "tunnelws_testnet.inprocess.SCENARIOS": SCENARIOS,
    "docs/pytest-plugin.md": _plugin_doc_ids(),
    "tests/test_check_scenarios.py CHECKS": test_check_scenarios.CHECKS,
    "tests/test_harness_matrix.py SAMPLE": test_harness_matrix.SAMPLE,
    # Empty while tunnelws is correct everywhere.
    "tests/test_harness_run.py KNOWN_GAPS": test_harness_run.KNOWN_GAPS,
    "proxy/matrix.py": {
        matrix.IDLE_SCENARIO,
        matrix.RESET_SCENARIO,
        *(sid for note in matrix.SOURCE_NOTES for sid in note.scenarios),
    },
    "docs/compatibility.md": {
        sid
        for column in matrix.published_cells(
            (ROOT / "docs" / "compatibility.md").read_text()
        ).values()
        for sid in column
    },
}


def test_catalogue_ids_unique_and_expectations_known() -> None:
    ids = [s.id for s in CATALOGUE]
    assert len(ids) == len(set(ids)) == len(BY_ID)
    for s in CATALOGUE:
        assert s.expect == "pass" or s.expected_category in EXIT_CODES, s.id
        with_fallback = s.expect_with_fallback
        assert with_fallback is None or with_fallback != s.expect, s.id
        assert with_fallback in (None, "pass") or with_fallback[5:] in EXIT_CODES, s.id
    # H: WebSocket blocked, HTTP passes: the fallback passes, natively it fails.
    blocked = [s for s in CATALOGUE if s.section.startswith("H.")]
    assert {s.id for s in blocked} == {
        "forward-only-ws",
        "squid-default-ws",
        "intercept-no-upgrade",
        "buffering-proxy",
        "request-time-limit",
    }
    for s in blocked:
        assert s.expect_with_fallback == "pass" and not s.expects_pass, s.id
        assert s.extension is Extension.HTTP_FALLBACK, s.id
        assert s.time_limit > 0 and s.scheme in ("ws", "wss")
    # Sections A-H, each with its characteristic scenarios.
    assert [s.section[0] for s in CATALOGUE] == sorted(s.section[0] for s in CATALOGUE)
    groups = {s.catalogue_id for s in CATALOGUE}
    assert {
        "open-direct",
        "proxy-no-dns",
        "auth-ntlm",
        "ports-443-only",
        "transparent-80",
        "tls-intercept-trusted",
        "tls-intercept-system-store",
        "bandwidth-limit",
        "socks5h",
        "pac-failover",
    } <= groups


@pytest.mark.parametrize("table", list(TABLES))
def test_tables_name_only_catalogue_ids(table: str) -> None:
    names = set(TABLES[table])
    assert names or table.endswith("KNOWN_GAPS"), f"{table} names no scenario (was it renamed?)"
    unknown = names - set(BY_ID)
    assert not unknown, f"{table} names scenarios the catalogue lacks: {sorted(unknown)}"


def test_in_process_networks_take_the_catalogues_expectations() -> None:
    for sid, scenario in SCENARIOS.items():
        assert scenario.expect == BY_ID[sid].expect, sid
    assert _plugin_doc_ids() == set(SCENARIOS)


def test_docs_harness_table_is_the_catalogue() -> None:
    page = ROOT / "docs" / "harness.md"
    text = page.read_text()
    assert update(text) == text, (
        "docs/harness.md's catalogue table differs from the catalogue: run "
        "`.venv/bin/python -m tunnelws_testnet.harness._doc docs/harness.md`"
    )
    for s in CATALOGUE:
        assert f"\n| {s.id} | {s.section} |" in text


def test_no_file_points_outside_the_repository() -> None:
    """Design inputs outside the repository are never referenced from it."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        skip_or_fail("not a git checkout")
    # Spelled in pieces, so that this file does not match itself.
    pieces = ("../" + "shared" + "/", "/work/" + "shared", "shared" + "/scenarios.md")
    outside = re.compile("|".join(re.escape(piece) for piece in pieces))
    offenders = []
    for name in listed.decode().split("\0"):
        path = ROOT / name
        if not name or not path.is_file():
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        lines = enumerate(text.splitlines(), 1)
        offenders += [f"{name}:{n}" for n, line in lines if outside.search(line)]
    assert offenders == []
