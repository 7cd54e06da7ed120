"""``tunnelws proxy``: run the companion test proxy.

Starts from a profile (``open`` by default) and lets every explicit option
override that profile's part. Prints the URL it listens on (and the CA path
when intercepting) on stdout, then serves until Ctrl-C, which exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import ssl
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from . import EXIT_USAGE, requiring_extra
from ._arguments import fraction as _fraction
from ._arguments import host_port as _host_port
from ._arguments import ports as _ports

if TYPE_CHECKING:
    from ..companion import ProxyConfig

__all__ = ["build_config", "register", "run"]

EXIT_OK = 0


def _user_pass(text: str) -> tuple[str, str]:
    user, colon, password = text.partition(":")
    if not colon or not user:
        raise argparse.ArgumentTypeError("expected USER:PASS")
    return user, password


def _slice(text: str) -> tuple[int, int]:
    low, colon, high = text.partition(":")
    if not colon or not low.isdigit() or not high.isdigit():
        raise argparse.ArgumentTypeError("expected MIN:MAX bytes, e.g. 1:16")
    return int(low), int(high)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ..companion import PROFILES, ReplyQuirks

    profiles = ", ".join(f"{p.name} ({p.description})" for p in PROFILES.values())
    parser = subparsers.add_parser(
        "proxy",
        help="run the companion test proxy (auth, policy, quirks, faults, TLS interception)",
        description=(
            "Run an HTTP proxy with the behaviours of real corporate proxies, for testing "
            f"clients. Profiles: {profiles}. Options override the profile's parts."
        ),
    )
    # Every option defaults to None so only what the user typed overrides the profile.
    add = parser.add_argument
    add("--listen", type=_host_port, metavar="HOST:PORT", help="default 127.0.0.1:0 (any port)")
    add("--profile", choices=sorted(PROFILES), default="open", help="starting point (open)")
    add("--log", metavar="FILE", help="append one JSON line per request/tunnel ('-' = stdout)")
    auth = parser.add_argument_group("authentication")
    auth.add_argument("--auth", type=_user_pass, metavar="USER:PASS", help="require credentials")
    auth.add_argument(
        "--auth-scheme",
        choices=["basic", "digest", "ntlm", "negotiate"],
        help="default basic; ntlm/negotiate take --auth 'DOMAIN\\USER:PASS' or USER:PASS",
    )
    auth.add_argument("--realm", help="challenge realm (tunnelws)")
    auth.add_argument("--digest-algorithm", choices=["MD5", "SHA-256"], help="default MD5")
    auth.add_argument(
        "--close-after-407",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="close the connection after each 407",
    )
    policy = parser.add_argument_group("policy")
    policy.add_argument("--allow-ports", type=_ports, metavar="P,P", help="e.g. 443,8443")
    policy.add_argument("--any-port", action="store_true", help="drop the profile's port list")
    policy.add_argument("--allow-host", action="append", metavar="H", help="name or CIDR")
    policy.add_argument("--deny-host", action="append", metavar="H", help="name or CIDR")
    policy.add_argument("--deny-status", type=int, metavar="N", help="status for refusals (403)")
    policy.add_argument(
        "--strip-upgrade",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="drop Upgrade from forwarded requests (squid)",
    )
    policy.add_argument(
        "--transparent",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="forward origin-form requests to their Host (for redirected traffic)",
    )
    quirks = parser.add_argument_group("reply quirks")
    names = ", ".join(
        f.name.replace("_", "-")
        for f in dataclasses.fields(ReplyQuirks)
        if f.name != "reply_status"
    )
    quirks.add_argument(
        "--quirk", action="append", metavar="NAME", help=f"repeatable; one of: {names}"
    )
    quirks.add_argument("--reply-status", type=int, metavar="N", help="answer CONNECT with N")
    toxics = parser.add_argument_group("faults on tunnels")
    toxics.add_argument("--latency", type=float, metavar="S", help="seconds, each direction")
    toxics.add_argument("--latency-up", type=float, metavar="S", help="client -> origin")
    toxics.add_argument("--latency-down", type=float, metavar="S", help="origin -> client")
    toxics.add_argument("--bandwidth", type=int, metavar="BYTES", help="bytes/s each direction")
    toxics.add_argument("--slice", type=_slice, metavar="MIN:MAX", help="cut writes (bytes)")
    toxics.add_argument("--seed", type=int, help="for slicing and random resets")
    toxics.add_argument("--reset-after-bytes", type=int, metavar="N")
    toxics.add_argument("--reset-after-seconds", type=float, metavar="S")
    toxics.add_argument("--reset-chance", type=float, metavar="P", help="per relayed chunk")
    toxics.add_argument("--idle-timeout", type=float, metavar="S")
    toxics.add_argument("--max-lifetime", type=float, metavar="S")
    tls = parser.add_argument_group("TLS")
    tls.add_argument("--tls-cert", type=Path, metavar="F", help="serve https:// (with --tls-key)")
    tls.add_argument("--tls-key", type=Path, metavar="F")
    tls.add_argument(
        "--intercept",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="terminate TLS in tunnels with certificates from the proxy's own CA",
    )
    tls.add_argument("--ca-dir", type=Path, metavar="D", help="where the interception CA goes")
    tls.add_argument("--onward-ca", type=Path, metavar="F", help="CA file for origins' TLS")
    blocking = parser.add_argument_group("behaviours that block WebSocket but let HTTP pass")
    blocking.add_argument("--refuse-connect", action=argparse.BooleanOptionalAction, default=None,
                          help="answer every CONNECT with 405 (a forward-only proxy)")
    blocking.add_argument("--connect-ports", type=_ports, metavar="P,P",
                          help="ports CONNECT alone may reach (squid's SSL_ports), e.g. 443")
    blocking.add_argument("--buffer-responses", type=int, metavar="BYTES",
                          help="hold each forwarded response until BYTES or its end")
    blocking.add_argument("--request-time-limit", type=float, metavar="S",
                          help="cut forwarded requests S seconds after they started")
    blocking.add_argument("--max-request-body", type=int, metavar="BYTES",
                          help="forwarded requests with a larger body get 413")
    blocking.add_argument("--reset-responses", type=_fraction, metavar="FRACTION",
                          help="reset this fraction of forwarded responses mid-body (--seed)")
    parser.set_defaults(handler=requiring_extra("proxy", run))


def build_config(args: argparse.Namespace) -> ProxyConfig:
    """The profile's config with every explicitly given option applied."""
    from ..companion import PROFILES, ReplyQuirks

    config = PROFILES[args.profile].config
    changes: dict[str, Any] = {}
    if args.listen is not None:
        changes["host"], changes["port"] = args.listen
    for name in (
        "auth",
        "auth_scheme",
        "realm",
        "digest_algorithm",
        "close_after_407",
        "allow_ports",
        "deny_status",
        "strip_upgrade",
        "transparent",
        "refuse_connect",
        "connect_ports",
        "buffer_responses",
        "request_time_limit",
        "max_request_body",
        "reset_responses",
        "intercept",
        "ca_dir",
    ):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.any_port:
        changes["allow_ports"] = None
    if args.allow_host:
        changes["allow_hosts"] = tuple(args.allow_host)
    if args.deny_host:
        changes["deny_hosts"] = tuple(args.deny_host)
    if args.quirk or args.reply_status is not None:
        quirks = ReplyQuirks.from_names(args.quirk or ())
        if args.reply_status is not None:
            quirks = dataclasses.replace(quirks, reply_status=args.reply_status)
        changes["quirks"] = quirks
    toxic_changes: dict[str, Any] = {}
    if args.latency is not None:
        toxic_changes["latency_up"] = toxic_changes["latency_down"] = args.latency
    for name in (
        "latency_up",
        "latency_down",
        "bandwidth",
        "seed",
        "reset_after_bytes",
        "reset_after_seconds",
        "reset_chance",
        "idle_timeout",
        "max_lifetime",
    ):
        if getattr(args, name) is not None:
            toxic_changes[name] = getattr(args, name)
    if args.slice is not None:
        toxic_changes["slice_min"], toxic_changes["slice_max"] = args.slice
    if toxic_changes:
        changes["toxics"] = dataclasses.replace(config.toxics, **toxic_changes)
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    if args.tls_cert is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        changes["ssl_context"] = context
    if args.onward_ca is not None:
        changes["onward_ssl_context"] = ssl.create_default_context(cafile=str(args.onward_ca))
    if args.log is not None:
        changes["log"] = sys.stdout if args.log == "-" else args.log
    return dataclasses.replace(config, **changes)


async def _serve(config: ProxyConfig) -> None:
    from ..companion import serve_proxy

    async with trio.open_nursery() as nursery:
        proxy = await nursery.start(serve_proxy, config)
        print(f"tunnelws proxy listening on {proxy.url}", flush=True)
        if proxy.ca_path is not None:
            print(f"interception CA certificate: {proxy.ca_path}", flush=True)
        # Ctrl-C and SIGTERM (harnesses stop us by PID) both end cleanly.
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def run(args: argparse.Namespace) -> int:
    try:
        config = build_config(args)
    except (ValueError, OSError, ssl.SSLError) as exc:
        print(f"tunnelws proxy: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        trio.run(_serve, config)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"tunnelws proxy: cannot listen: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK
