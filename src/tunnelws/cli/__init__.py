"""The ``tunnelws`` command line.

Each built-in subcommand lives in its own module exposing ``register(subparsers)``,
which adds its parser and sets ``handler`` to a function taking the parsed
arguments and returning the exit code.

Other packages add commands through the ``tunnelws.commands`` entry-point
group: each entry is a command name and a ``register(subparsers)`` function
with the same contract. The test network adds ``serve``, ``proxy``,
``harness`` and ``demo`` this way; the client never imports it. Entries are
loaded only when the command line is not a built-in command (``--help``, a
plug-in command, a typo), so ``tunnelws connect`` loads none of them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

__all__ = ["BUILTIN_COMMANDS", "COMMAND_GROUP", "build_parser", "main"]

# Built-in commands, in the order ``tunnelws --help`` lists them.
BUILTIN_COMMANDS: tuple[str, ...] = (
    "connect",
    "resolve",
    "events",
    "tunnel",
    "forward",
    "local-proxy",
    "check",
)
COMMAND_GROUP = "tunnelws.commands"

EXIT_USAGE = 2


def build_parser(*, plugins: bool = True) -> argparse.ArgumentParser:
    """The parser with the built-in commands and, with ``plugins``, every
    command of the ``tunnelws.commands`` entry-point group after them."""
    parser = argparse.ArgumentParser(
        prog="tunnelws",
        description="WebSocket through corporate proxies and firewalls.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in BUILTIN_COMMANDS:
        # A command's module is its name with "_" for "-" (local-proxy).
        module = importlib.import_module(f"tunnelws.cli.{name.replace('-', '_')}")
        module.register(subparsers)
    if plugins:
        for entry in _plugin_entries():
            _register_plugin(entry, subparsers)
    return parser


def _plugin_entries() -> list[EntryPoint]:
    """The group's entries in metadata order; a name already taken (a
    built-in, or an earlier entry) is skipped."""
    # Imported here: reading metadata costs a built-in command's start-up time.
    from importlib.metadata import entry_points

    taken = set(BUILTIN_COMMANDS)
    entries = []
    for entry in entry_points(group=COMMAND_GROUP):
        if entry.name not in taken:
            taken.add(entry.name)
            entries.append(entry)
    return entries


def _register_plugin(
    entry: EntryPoint, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]
) -> None:
    try:
        register = entry.load()
        register(subparsers)
    except Exception as exc:
        # A broken plug-in costs its own command, never the client's.
        print(
            f"tunnelws: command {entry.name!r} unavailable ({entry.value}: "
            f"{type(exc).__name__}: {exc})",
            file=sys.stderr,
        )


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    builtin = bool(arguments) and arguments[0] in BUILTIN_COMMANDS
    parser = build_parser(plugins=not builtin)
    args = parser.parse_args(arguments)
    try:
        code: int = args.handler(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
