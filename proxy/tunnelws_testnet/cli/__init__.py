"""The test network's ``tunnelws`` commands: ``serve``, ``proxy``,
``harness`` and ``demo``.

The client's command line finds them through the ``tunnelws.commands``
entry-point group (pyproject.toml): each entry is a command name and the
``register(subparsers)`` function of its module here. A new command is a
module with such a function, registering its handlers through
:func:`requiring_extra`, and one entry in that group; the client does not
change.

These modules import only what their parsers need, and nothing of the
``testnet`` extra, so ``tunnelws --help`` lists them in an install without
it. Running one then prints one line saying what to install and exits 2.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable

from .._extras import missing_extra

__all__ = ["EXIT_USAGE", "Handler", "requiring_extra"]

EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace], int]


def requiring_extra(command: str, handler: Handler) -> Handler:
    """``handler`` behind the check that the ``testnet`` extra is installed."""

    @functools.wraps(handler)
    def checked(args: argparse.Namespace) -> int:
        problem = missing_extra()
        if problem is not None:
            print(f"tunnelws {command}: {problem}", file=sys.stderr)
            return EXIT_USAGE
        return handler(args)

    return checked
