"""Reports: the terminal table, results.json, JUnit XML and report.html.

A report directory accumulates runs: each ``tunnelws harness run --report DIR``
replaces the run of the same client name in ``DIR/results.json`` (keeping the
others) and rewrites ``junit.xml`` and ``report.html`` from all of them, so
running several clients into one directory builds the scenario × client
matrix.
"""

from __future__ import annotations

import html
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, TextIO

from ._observe import FLAG_DESCRIPTIONS
from ._runner import RunResult, ScenarioResult
from ._scenarios import CATALOGUE, Scenario

__all__ = [
    "RESULTS_VERSION",
    "TerminalTable",
    "junit_xml",
    "load_runs",
    "report_html",
    "write_report",
]

RESULTS_VERSION = 1
_COLOURS = {"correct": "32", "wrong": "31", "skipped": "33", "error": "35"}


class TerminalTable:
    """One line per scenario as results arrive, then a summary."""

    def __init__(self, out: TextIO, total: int, *, colour: bool | None = None) -> None:
        self.out = out
        self.total = total
        self.colour = out.isatty() if colour is None else colour

    def header(self, client: str) -> None:
        self.out.write(f"tunnelws harness: {client} through {self.total} scenario(s)\n")
        self.out.write(
            f"{'':7} {'scenario':26} {'expected':22} {'verdict':8} {'exit':>4} {'time':>7}  notes\n"
        )
        self.out.flush()

    def started(self, index: int, scenario: Scenario) -> None:
        if self.colour:  # a transient progress line, replaced by the result
            self.out.write(f"[{index + 1:>2}/{self.total}] {scenario.id} ...\r")
            self.out.flush()

    def row(self, index: int, result: ScenarioResult) -> None:
        verdict = result.verdict
        if self.colour:
            verdict = f"\x1b[{_COLOURS[verdict]}m{verdict:8}\x1b[0m"
        exit_code = "" if result.exit_code is None else str(result.exit_code)
        notes = "; ".join(result.reasons)
        if result.category and result.verdict == "correct":
            notes = notes or result.category
        line = (
            f"[{index + 1:>2}/{self.total}] {result.scenario:26} {result.expect:22} "
            f"{verdict:8} {exit_code:>4} {result.client_seconds:6.2f}s  {notes}"
        )
        self.out.write(("\x1b[2K" if self.colour else "") + line.rstrip() + "\n")
        self.out.flush()

    def summary(self, run: RunResult) -> None:
        counts = run.counts()
        parts = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        self.out.write(f"{run.client}: {parts} in {run.seconds:.1f} s\n")
        self.out.flush()


def load_runs(directory: Path) -> list[dict[str, Any]]:
    """The runs recorded in ``directory/results.json`` (none if absent or unreadable)."""
    try:
        data = json.loads((directory / "results.json").read_text())
    except (OSError, ValueError):
        return []
    runs = data.get("runs") if isinstance(data, dict) else None
    return [r for r in runs if isinstance(r, dict)] if isinstance(runs, list) else []


def write_report(directory: Path, run: RunResult) -> list[Path]:
    """Merge ``run`` into the report in ``directory``; return the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    runs = [r for r in load_runs(directory) if r.get("client") != run.client]
    runs.append(run.to_json())
    files = {
        "results.json": json.dumps({"version": RESULTS_VERSION, "runs": runs}, indent=2) + "\n",
        "junit.xml": junit_xml(runs),
        "report.html": report_html(runs),
    }
    written = []
    for name, text in files.items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def junit_xml(runs: list[dict[str, Any]]) -> str:
    """JUnit XML: one testsuite per client, one testcase per scenario."""
    suites = ET.Element("testsuites", name="tunnelws harness")
    for run in runs:
        results = run.get("results", [])
        counts = run.get("counts", {})
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=f"harness.{run['client']}",
            tests=str(len(results)),
            failures=str(counts.get("wrong", 0)),
            errors=str(counts.get("error", 0)),
            skipped=str(counts.get("skipped", 0)),
            time=f"{run.get('seconds', 0):.3f}",
            timestamp=str(run.get("started", "")),
        )
        for result in results:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"harness.{run['client']}",
                name=result["scenario"],
                time=f"{result.get('client_seconds', 0):.3f}",
            )
            message = "; ".join(result.get("reasons", []))
            verdict = result.get("verdict")
            if verdict == "wrong":
                failure = ET.SubElement(case, "failure", message=message, type="wrong")
                failure.text = _details_text(result)
            elif verdict == "error":
                ET.SubElement(case, "error", message=message, type="harness-error")
            elif verdict == "skipped":
                ET.SubElement(case, "skipped", message=message)
            ET.SubElement(case, "system-out").text = result.get("stdout", "")
            ET.SubElement(case, "system-err").text = result.get("stderr", "")
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def _details_text(result: dict[str, Any]) -> str:
    lines = [f"expected: {result.get('expect')}", f"exit code: {result.get('exit_code')}"]
    lines += [f"- {reason}" for reason in result.get("reasons", [])]
    return "\n".join(lines)


_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table.matrix { border-collapse: collapse; }
.matrix th, .matrix td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; }
.matrix td.cell a { display: block; color: inherit; text-decoration: none; font-weight: 600; }
.correct { background: #d9f2d9; } .wrong { background: #f7d4d4; }
.skipped { background: #f7eccc; } .error { background: #ead4f2; } .missing { color: #999; }
section.detail { display: none; border: 1px solid #999; padding: .5em 1em; margin: 1em 0; }
section.detail:target { display: block; }
pre { background: #f4f4f4; padding: .5em; overflow-x: auto; max-height: 24em; }
.section-row th { background: #eee; }
"""


def _anchor(client: str, scenario: str) -> str:
    return "d-" + "".join(c if c.isalnum() else "-" for c in f"{client}--{scenario}")


def report_html(runs: list[dict[str, Any]]) -> str:
    """One static page: the scenario × client matrix; each cell links to its details."""
    esc = html.escape
    clients = [str(run["client"]) for run in runs]
    by_client = {
        str(run["client"]): {r["scenario"]: r for r in run.get("results", [])} for run in runs
    }
    known = [s.id for s in CATALOGUE]
    extra = sorted({sid for results in by_client.values() for sid in results} - set(known))
    scenario_ids = [sid for sid in known if any(sid in r for r in by_client.values())] + extra
    info = {s.id: s for s in CATALOGUE}
    out = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        "<title>tunnelws harness report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>tunnelws harness report</h1>",
        "<p>Each cell is one client in one simulated network; click it for the details "
        "(client output, proxy and origin log lines, timings, flags).</p>",
        "<table class='matrix'><thead><tr><th>scenario</th><th>network</th><th>expected</th>",
        *(f"<th>{esc(c)}</th>" for c in clients),
        "</tr></thead><tbody>",
    ]
    section = None
    for sid in scenario_ids:
        scenario = info.get(sid)
        if scenario is not None and scenario.section != section:
            section = scenario.section
            out.append(
                f"<tr class='section-row'><th colspan='{3 + len(clients)}'>{esc(section)}</th></tr>"
            )
        network = scenario.network if scenario else ""
        expect = scenario.expect_both if scenario else ""
        out.append(f"<tr><td>{esc(sid)}</td><td>{esc(network)}</td><td>{esc(expect)}</td>")
        for client in clients:
            result = by_client[client].get(sid)
            if result is None:
                out.append("<td class='missing'>not run</td>")
                continue
            verdict = str(result["verdict"])
            label = verdict + (" ⚑" if result.get("flags") else "")
            out.append(
                f"<td class='cell {esc(verdict)}'><a href='#{_anchor(client, sid)}' "
                f"title='{esc('; '.join(result.get('reasons', [])))}'>{esc(label)}</a></td>"
            )
        out.append("</tr>")
    out.append("</tbody></table>")
    out.append(
        "<p>Runs: "
        + "; ".join(
            f"{esc(str(r['client']))}: <code>{esc(' '.join(r.get('command', [])))}</code>, "
            f"started {esc(str(r.get('started')))}, {r.get('seconds', 0):.1f} s"
            for r in runs
        )
        + "</p>"
    )
    for client in clients:
        for result in by_client[client].values():
            out.append(_detail_html(client, result))
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _detail_html(client: str, result: dict[str, Any]) -> str:
    esc = html.escape
    rows = [
        ("verdict", result.get("verdict")),
        ("expected", result.get("expect")),
        ("URL", result.get("url")),
        ("exit code", result.get("exit_code")),
        ("category", result.get("category")),
        ("timed out", result.get("timed_out")),
        ("time limit", f"{result.get('time_limit')} s"),
        ("client time", f"{result.get('client_seconds')} s"),
        ("network setup", f"{result.get('setup_seconds')} s"),
    ]
    flags = result.get("flags", [])
    parts = [
        f"<section class='detail' id='{_anchor(client, result['scenario'])}'>",
        f"<h2>{esc(client)} in {esc(result['scenario'])}</h2>",
        "<p><a href='#'>back to the matrix</a></p><table>",
        *(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in rows),
        "</table>",
    ]
    if result.get("reasons"):
        parts.append(
            "<h3>Why</h3><ul>" + "".join(f"<li>{esc(r)}</li>" for r in result["reasons"]) + "</ul>"
        )
    parts.append(
        "<h3>Flags</h3><p>"
        + (
            ", ".join(f"<b>{esc(f)}</b> ({esc(FLAG_DESCRIPTIONS.get(f, ''))})" for f in flags)
            or "none"
        )
        + "</p>"
    )
    observation = result.get("observation") or {}
    for title, text in (
        ("Environment", "\n".join(f"{k}={v}" for k, v in sorted(result.get("env", {}).items()))),
        ("Client stdout", result.get("stdout", "")),
        ("Client stderr", result.get("stderr", "")),
        (
            "Network observations",
            json.dumps({k: v for k, v in observation.items() if k != "origin_requests"}, indent=1),
        ),
        ("Proxy log", "\n".join(result.get("proxy_log", []))),
        ("Origin log", "\n".join(result.get("origin_log", []))),
    ):
        parts.append(f"<h3>{esc(title)}</h3><pre>{esc(text) or '(empty)'}</pre>")
    parts.append("</section>")
    return "\n".join(parts)
