"""``tunnelws serve``: run the origin test server until Ctrl-C.

WebSocket echo (``/echo``), handshake info (``/info``), a server-sent events
timestamp stream (``/timestamp``) and the browser compatibility page (``/``),
on a plain port and optionally a TLS port. Without ``--cert``/``--key`` the TLS
port uses a freshly generated test CA whose certificate is written to a file.
"""

from __future__ import annotations

import argparse
import signal
import ssl
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, TextIO

import trio

from . import EXIT_USAGE, requiring_extra

if TYPE_CHECKING:
    from ..origin import LocalCA, OriginAddresses, OriginConfig

__all__ = ["register", "run"]

EXIT_OK = 0
EXIT_CANNOT_SERVE = 1
DEFAULT_PORT = 8000
WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ..origin import OriginConfig

    parser = subparsers.add_parser(
        "serve",
        help="run the origin test server (WebSocket echo, info, SSE, browser page)",
        description=(
            "Serve /echo (WebSocket echo), /info (what the server received), /timestamp "
            "(server-sent events) and / (a browser compatibility check and echo client) "
            "until Ctrl-C. With --tls-port and no --cert/--key, a test CA is generated and "
            "its certificate written to a file whose path is printed."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on "
                        "(default 127.0.0.1; 0.0.0.0 or :: for every interface)")
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT,
                        help=f"plain HTTP/ws port (default {DEFAULT_PORT}; 0 picks a free one)")
    parser.add_argument("--tls-port", type=_port, metavar="PORT",
                        help="also serve HTTPS/wss on this port (0 picks a free one)")
    parser.add_argument("--cert", metavar="FILE",
                        help="certificate chain (PEM) for --tls-port instead of a test CA")
    parser.add_argument("--key", metavar="FILE", help="private key (PEM) for --cert")
    parser.add_argument("--ca-dir", metavar="DIR",
                        help="where to write the generated test CA (default: a new temp dir)")
    parser.add_argument("--cert-name", metavar="NAME", action="append", default=[],
                        help="extra host name or IP for the generated certificate, e.g. a LAN "
                             "address to test from a phone (repeatable)")
    parser.add_argument("--max-message-size", type=int, metavar="BYTES",
                        default=OriginConfig.max_message_size,
                        help="largest WebSocket message echoed (default 16 MiB; larger: 1009)")
    parser.set_defaults(handler=requiring_extra("serve", run))


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {port}")
    return port


def _fail(message: str, code: int) -> int:
    print(f"tunnelws serve: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    from ..origin import OriginConfig, make_test_ca

    if (args.cert is None) != (args.key is None):
        return _fail("--cert and --key go together", EXIT_USAGE)
    if args.cert is not None and args.tls_port is None:
        return _fail("--cert/--key need --tls-port", EXIT_USAGE)
    config = OriginConfig(host=args.host, port=args.port,
                          max_message_size=args.max_message_size)
    ca: LocalCA | None = None
    if args.tls_port is not None:
        if args.cert is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                context.load_cert_chain(args.cert, args.key)
            except (OSError, ssl.SSLError) as exc:
                return _fail(f"cannot load --cert/--key: {exc}", EXIT_USAGE)
        else:
            names = list(args.cert_name)
            if args.host not in WILDCARD_HOSTS:
                names.append(args.host)
            ca = make_test_ca(names, directory=args.ca_dir)
            context = ca.server_context()
        config = replace(config, tls_port=args.tls_port, ssl_context=context)
    error = trio.run(_serve, config, ca)
    if error is not None:
        return _fail(f"cannot listen on {args.host}: {error}", EXIT_CANNOT_SERVE)
    print("stopped", flush=True)
    return EXIT_OK


async def _serve(config: OriginConfig, ca: LocalCA | None) -> str | None:
    """Serve until SIGINT/SIGTERM; return why the server could not start, if so."""
    from ..origin import serve_origin

    # Signals become a normal return (no KeyboardInterrupt traceback, exit 0).
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            try:
                addresses: OriginAddresses = await nursery.start(serve_origin, config)
            except OSError as exc:
                return exc.strerror or str(exc)
            print_banner(addresses, config, ca, sys.stdout)
            async for _signal in signals:
                break
            nursery.cancel_scope.cancel()
    return None


def print_banner(
    addresses: OriginAddresses, config: OriginConfig, ca: LocalCA | None, out: TextIO
) -> None:
    """The URLs being served, with wildcard hosts shown as their loopback address."""
    from ..origin import OriginAddresses

    shown = OriginAddresses(
        http=(WILDCARD_HOSTS.get(addresses.http[0], addresses.http[0]), addresses.http[1]),
        https=None if addresses.https is None else (
            WILDCARD_HOSTS.get(addresses.https[0], addresses.https[0]), addresses.https[1]
        ),
    )
    lines = ["tunnelws origin test server"]
    if config.host in WILDCARD_HOSTS:
        lines.append(f"  listening on every interface ({config.host or '*'})")
    lines += [
        f"  page       {shown.http_url('/')}",
        f"  echo       {shown.ws_url('/echo')}",
        f"  info       {shown.ws_url('/info')}  {shown.http_url('/info')}",
        f"  events     {shown.http_url('/timestamp')}",
    ]
    if shown.https is not None:
        lines += [
            f"  page (TLS) {shown.https_url('/')}",
            f"  echo (TLS) {shown.wss_url('/echo')}",
            f"  info (TLS) {shown.wss_url('/info')}",
            f"  events (TLS) {shown.https_url('/timestamp')}",
        ]
    if ca is not None:
        lines.append(f"  test CA certificate: {ca.ca_pem_path}")
        lines.append(f"    (trust it for wss:// and https://; certificate names: "
                     f"{', '.join(ca.names)})")
    lines.append("Press Ctrl-C to stop.")
    print("\n".join(lines), file=out, flush=True)
