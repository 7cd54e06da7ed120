"""``tunnelws harness``: run a client program through simulated corporate networks.

``tunnelws harness run [--scenario ID]... [--report DIR] -- CMD ARGS...`` runs
CMD once per scenario inside a Linux network namespace behind a simulated
firewall and proxy (root, ``ip`` and ``nft`` needed), and reports per scenario
whether the client behaved correctly. Without CMD it runs tunnelws's own
client and also checks its failure categories. ``tunnelws harness list``
prints the catalogue; ``tunnelws harness cleanup`` removes namespaces left by
a crashed run. See docs/harness.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from . import EXIT_USAGE, requiring_extra

if TYPE_CHECKING:
    from ..harness import ClientSpec, RunResult, Scenario

__all__ = ["register", "run"]

EXIT_OK = 0
EXIT_WRONG = 1
EXIT_INTERRUPTED = 130


def register(subparsers: Any) -> None:
    handler = requiring_extra("harness", run)
    parser = subparsers.add_parser(
        "harness",
        help="run any client through simulated corporate networks (namespaces + nftables)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="harness_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="print the scenario catalogue")
    listing.set_defaults(handler=handler)
    runner = actions.add_parser(
        "run",
        help="run CMD through the scenarios (default: tunnelws's own client)",
        description="Run CMD once per scenario in the client namespace. CMD gets TUNNELWS_URL, "
        "TUNNELWS_MESSAGE, the scenario's proxy variables and CA bundle; it must print the "
        "echo and exit 0, or exit non-zero when the connection fails.",
    )
    runner.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="ID",
        help="run only this scenario or catalogue id (repeatable)",
    )
    runner.add_argument(
        "--report",
        type=Path,
        metavar="DIR",
        help="write results.json, junit.xml and report.html into DIR "
        "(merged with other clients' runs already there)",
    )
    runner.add_argument("--name", help="the client's name in reports (default: the command)")
    runner.add_argument(
        "--exit-codes",
        action="store_true",
        help="CMD exits with tunnelws's exit codes: check failure categories",
    )
    runner.add_argument(
        "--fallback",
        action="store_true",
        help="CMD has tunnelws's HTTP fallback: judge it on the fallback's expectations "
        "where a scenario has one (the built-in client has it)",
    )
    runner.add_argument(
        "--through-local-proxy",
        action="store_true",
        help="start `tunnelws local-proxy` in the client namespace with the scenario's route "
        "and give CMD only http_proxy/https_proxy pointing at it (what the local proxy fixes "
        "for that client, and what it cannot)",
    )
    runner.add_argument(
        "--fail-on-skip",
        action="store_true",
        help="exit 1 when a scenario is skipped (default under CI=true)",
    )
    runner.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        metavar="-- CMD ARGS",
        help="the client command (after --)",
    )
    runner.set_defaults(handler=handler)
    cleanup = actions.add_parser("cleanup", help="remove namespaces left by crashed runs")
    cleanup.add_argument(
        "--all", action="store_true", help="also namespaces of harness runs that are still running"
    )
    cleanup.set_defaults(handler=handler)


def run(args: argparse.Namespace) -> int:
    if args.harness_command == "list":
        return _list()
    if args.harness_command == "cleanup":
        return _cleanup(include_live=args.all)
    return _run(args)


def _list() -> int:
    from ..harness import CATALOGUE

    section = None
    for scenario in CATALOGUE:
        if scenario.section != section:
            section = scenario.section
            print(f"\n{section}")
        needs = f"  [needs {', '.join(scenario.requires)}]" if scenario.requires else ""
        print(f"  {scenario.id:26} {scenario.expect_both:22} {scenario.network}{needs}")
    return EXIT_OK


def _cleanup(*, include_live: bool) -> int:
    from ..harness import cleanup_stale

    if os.geteuid() != 0:
        print("tunnelws harness: cleanup needs root", file=sys.stderr)
        return EXIT_USAGE
    removed = cleanup_stale(include_live=include_live)
    for name in removed:
        print(f"removed {name}")
    print(f"{len(removed)} namespace(s) removed")
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from ..harness import ClientSpec, builtin_client, select

    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if command:
        client = ClientSpec(
            args.name or Path(command[0]).name,
            tuple(command),
            exit_codes=args.exit_codes,
            fallback=args.fallback,
            through_local_proxy=args.through_local_proxy,
        )
    elif args.through_local_proxy:
        print(
            "tunnelws harness: --through-local-proxy needs a client command "
            "(tunnelws's own client has the route itself)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    else:
        client = builtin_client(args.name or "tunnelws")
    try:
        scenarios = select(args.scenario)
    except KeyError as exc:
        print(
            f"tunnelws harness: unknown scenario(s): {exc.args[0]} (see `tunnelws harness list`)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    fail_on_skip = args.fail_on_skip or os.environ.get("CI", "").lower() in {"1", "true", "yes"}
    if args.report is not None:
        workdir = args.report / "artifacts" / _safe(client.name)
        shutil.rmtree(workdir, ignore_errors=True)
        keep = True
    else:
        workdir = Path(tempfile.mkdtemp(prefix="tunnelws-harness-"))
        keep = False
    try:
        result = trio.run(partial(_run_async, client, scenarios, workdir))
    except KeyboardInterrupt:
        print("\ntunnelws harness: interrupted; everything started was torn down", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if result is None:
        print(
            "\ntunnelws harness: interrupted; everything started was torn down",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if args.report is not None:
        from ..harness._report import write_report

        for path in write_report(args.report, result):
            print(f"wrote {path}")
    counts = result.counts()
    if counts["wrong"] or counts["error"] or (fail_on_skip and counts["skipped"]):
        return EXIT_WRONG
    return EXIT_OK


async def _run_async(
    client: ClientSpec, scenarios: list[Scenario], workdir: Path
) -> RunResult | None:
    """The run, or None when Ctrl-C or SIGTERM stopped it (after teardown)."""
    from ..harness import run_client
    from ..harness._report import TerminalTable

    table = TerminalTable(sys.stdout, len(scenarios))
    table.header(client.name)
    result: RunResult | None = None
    # Both signals cancel the run; each scenario's teardown still runs (shielded).
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            result = await run_client(
                client, scenarios, workdir=workdir, on_start=table.started, on_result=table.row
            )
            table.summary(result)
            nursery.cancel_scope.cancel()
    return result


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "client"
