"""``tunnelws resolve URL``: which route a URL takes, and why.

Prints ``DIRECT`` or the (redacted) proxy URL on stdout. With ``-v`` it also
explains the decision on stderr, curl style: every variable looked at and its
redacted value, ignored entries, and the rule that decided. When a PAC script
decides, it is fetched and run (the only case where ``resolve`` touches the
network): stdout shows the first route, ``-v`` the script's answer and the
order in which the routes would be tried.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping

import trio

from .._errors import ProxyConfigError
from .._pac import PacAnswer, default_resolver
from .._proxy_url import ProxyURL, redact_proxy_value
from .._route import AUTO, NO_PROXY_VARIABLES, ProxyDecision, ProxySetting, resolve_proxy
from .._target import Target, parse_target

__all__ = ["register", "run"]

EXIT_OK = 0
EXIT_BAD_URL = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "resolve",
        help="show which proxy (if any) a URL goes through, and why",
        description=(
            "Print DIRECT or the proxy URL (password shown as ***) that tunnelws would use "
            "for URL. Reads wss_proxy/https_proxy/ws_proxy/http_proxy/all_proxy and no_proxy "
            "(lower case first) unless --proxy or --no-proxy is given. Makes no connection."
        ),
    )
    parser.add_argument("url", metavar="URL", help="ws://, wss://, http:// or https:// URL")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--proxy", metavar="PROXY_URL", help="use this proxy (wins over no_proxy)")
    choice.add_argument(
        "--no-proxy", action="store_true", help="connect directly, ignoring the environment"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="explain the decision on stderr"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> int:
    environ = os.environ if env is None else env
    try:
        parse_target(args.url)
    except ValueError as exc:
        print(f"tunnelws resolve: {exc}", file=sys.stderr)
        return EXIT_BAD_URL

    proxy: ProxySetting = AUTO
    if args.no_proxy:
        proxy = None
    elif args.proxy is not None:
        proxy = args.proxy
    try:
        decision = resolve_proxy(args.url, proxy, env=environ)
    except ProxyConfigError as exc:
        # The message names the variable and shows the value redacted.
        print(f"tunnelws resolve: {exc}", file=sys.stderr)
        return exc.exit_code

    answer: PacAnswer | None = None
    if decision.pac is not None:
        pac = decision.pac
        try:
            answer = trio.run(default_resolver().find_proxy, pac, parse_target(args.url))
        except ProxyConfigError as exc:
            print(f"tunnelws resolve: {exc}", file=sys.stderr)
            return exc.exit_code

    if args.verbose:
        for line in explain(args.url, decision, environ, answer):
            print(f"* {line}", file=sys.stderr)
    if answer is not None:
        first = answer.routes[0] if answer.routes else None
        print("DIRECT" if first is None else first.redacted())
    else:
        print(decision)
    return EXIT_OK


def explain(
    url: str, decision: ProxyDecision, env: Mapping[str, str], pac: PacAnswer | None = None
) -> list[str]:
    """The ``-v`` lines (without the ``* `` prefix), credentials redacted."""
    target = parse_target(url)
    lines = [f"URL {target.url} -> host {target.host!r}, port {target.port}"]
    for name in decision.considered:
        value = env.get(name)
        if value is None:
            shown = "(unset)"
        elif not value.strip():
            shown = "(empty: treated as unset)"
        elif name in NO_PROXY_VARIABLES:
            shown = repr(value)
        else:
            shown = repr(redact_proxy_value(value.strip()))
        lines.append(f"{name} = {shown}")
    lines.extend(decision.notes)
    lines.append(f"Rule: {decision.rule}")
    if pac is not None:
        lines.append(f"PAC script: {pac.script_url}")
        lines.append(f"PAC FindProxyForURL({pac.query_url!r}, {target.host!r}) = {pac.text!r}")
        lines.extend(pac.notes)
        for number, route in enumerate(pac.routes, start=1):
            shown = f"direct to {target.authority}" if route is None else _via(route, target)
            lines.append(f"Attempt {number}: {shown}")
        if len(pac.routes) > 1:
            lines.append("Failover: the next route is tried when a proxy cannot be reached")
        return lines
    proxy = decision.proxy
    if proxy is None:
        lines.append(f"Route: direct to {target.authority}")
    else:
        lines.append(f"Route: {_via(proxy, target)}")
    return lines


def _via(proxy: ProxyURL, target: Target) -> str:
    if proxy.scheme == "socks5h":
        return f"via {proxy} (SOCKS5, the proxy resolves {target.host!r})"
    if proxy.scheme == "socks5":
        return f"via {proxy} (SOCKS5, {target.host!r} resolved by this client)"
    return f"via {proxy} (CONNECT {target.authority})"
