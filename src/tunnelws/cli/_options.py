"""Options shared by the client commands (connect, events, check): how to
reach the origin, and how errors become exit codes and one-line messages."""

from __future__ import annotations

import argparse
import getpass
import os
import ssl
import sys
from collections.abc import Callable, Sequence

from .._errors import TunnelError
from .._route import AUTO, ProxySetting
from .._route_options import RouteOptions, route_options
from .._trust import default_ssl_context

__all__ = [
    "add_header_argument",
    "add_route_arguments",
    "parse_header",
    "report_error",
    "route_from_args",
    "stderr_trace",
]

EXIT_USAGE = 2
# Where --proxy-user USER (no ":PASS") finds the password: not on the command
# line, which every user of the machine can read with `ps`.
PASSWORD_VARIABLE = "TUNNELWS_PROXY_PASSWORD"


def parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {text!r}")
    return name.strip(), value.strip()


def _user_password(text: str) -> tuple[str, str | None]:
    user, sep, password = text.partition(":")
    if not user:
        raise argparse.ArgumentTypeError("expected USER or USER:PASSWORD")
    return user, password if sep else None


def _with_password(user_password: tuple[str, str | None] | None) -> tuple[str, str] | None:
    """``--proxy-user USER``: the password from the environment, else a
    prompt on the terminal (never standard input: it may be tunnel data)."""
    if user_password is None:
        return None
    user, password = user_password
    if password is None:
        password = os.environ.get(PASSWORD_VARIABLE)
    if password is None:
        try:
            with open("/dev/tty"):
                pass
        except OSError:
            raise ValueError(
                f"--proxy-user {user!r} has no password: set {PASSWORD_VARIABLE} "
                "or run from a terminal to be asked"
            ) from None
        password = getpass.getpass(f"proxy password for {user}: ")
    return user, password


def add_route_arguments(parser: argparse.ArgumentParser) -> None:
    route = parser.add_mutually_exclusive_group()
    route.add_argument("--proxy", metavar="URL", help="use this proxy (overrides the environment)")
    route.add_argument(
        "--no-proxy", action="store_true", help="connect directly, ignoring proxy variables"
    )
    parser.add_argument(
        "--proxy-user",
        metavar="USER[:PASS]",
        type=_user_password,
        help="proxy credentials for any scheme the proxy asks for; without :PASS the "
        f"password comes from ${PASSWORD_VARIABLE} or a prompt (keeping it out of ps)",
    )
    parser.add_argument(
        "--proxy-auth-scheme",
        metavar="SCHEME",
        action="append",
        default=[],
        help="only answer with this scheme (negotiate, ntlm, digest, basic; repeatable); "
        "default: the strongest the proxy offers",
    )
    parser.add_argument(
        "--proxy-header",
        metavar="'K: V'",
        type=parse_header,
        action="append",
        default=[],
        help="extra header for the CONNECT request (repeatable)",
    )
    parser.add_argument("--cacert", metavar="FILE", help="also trust this CA for the origin (PEM)")
    parser.add_argument(
        "--proxy-cacert", metavar="FILE", help="also trust this CA for an https:// proxy (PEM)"
    )
    parser.add_argument(
        "--connect-timeout",
        metavar="S",
        type=float,
        default=10.0,
        help="seconds to get connected, all phases together (default 10)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show the route and the proxy exchange on stderr (credentials as ***)",
    )


def add_header_argument(parser: argparse.ArgumentParser, *, request: str) -> None:
    """``-H 'K: V'``, repeatable: extra headers for the origin request."""
    parser.add_argument(
        "-H",
        "--header",
        metavar="'K: V'",
        type=parse_header,
        action="append",
        default=[],
        help=f"extra header for the {request} (repeatable)",
    )


def _context_trusting(cafile: str | None) -> ssl.SSLContext | None:
    """The OS trust store plus ``cafile`` (added, not replacing it); None
    without a file, leaving the transport's default (the OS store)."""
    if cafile is None:
        return None
    return default_ssl_context(cafile)


def stderr_trace(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def route_from_args(args: argparse.Namespace) -> RouteOptions:
    """The :class:`RouteOptions` the route arguments describe."""
    proxy: ProxySetting = AUTO
    if args.no_proxy:
        proxy = None
    elif args.proxy:
        proxy = args.proxy
    return route_options(
        proxy=proxy,
        proxy_auth=_with_password(args.proxy_user),
        proxy_headers=args.proxy_header,
        ssl_context=_context_trusting(args.cacert),
        proxy_auth_schemes=args.proxy_auth_scheme or None,
        proxy_ssl_context=_context_trusting(args.proxy_cacert),
        connect_timeout=args.connect_timeout,
        trace=stderr_trace if args.verbose else None,
    )


def report_error(run: Callable[[], int]) -> int:
    """Run a command; typed errors become their exit code and one line, also
    when a nursery wrapped the error in an exception group of one."""
    try:
        return run()
    except Exception as raised:
        error = _sole_error(raised)
        if isinstance(error, TunnelError):
            print(f"tunnelws: {error.category}: {error}", file=sys.stderr)
            return error.exit_code
        if isinstance(error, (ValueError, OSError)):
            # Bad URLs and unreadable CA files are usage errors, not tracebacks.
            print(f"tunnelws: error: {error}", file=sys.stderr)
            return EXIT_USAGE
        raise


def _sole_error(error: BaseException) -> BaseException:
    """The one error inside nested exception groups of one (a server that
    failed while a nursery started it), else ``error`` itself."""
    # Duck-typed: Python 3.10 has no BaseExceptionGroup builtin.
    inner: Sequence[object] = getattr(error, "exceptions", ())
    while len(inner) == 1 and isinstance(inner[0], BaseException):
        error = inner[0]
        inner = getattr(error, "exceptions", ())
    return error
