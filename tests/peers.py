"""Real third-party proxies as test peers: :mod:`tunnelws_testnet.peers`
with the suite's rule for a missing component.

Each launcher is a synchronous context manager around
:func:`tunnelws_testnet.peers.run_proxy`: it starts the proxy on a free
loopback port with its files under ``tmp_path``, waits until it serves,
yields a :class:`~tunnelws_testnet.peers.ProxyProcess` and stops it by PID on
exit (also when the test body raises). A proxy that cannot run here skips the
test on a laptop and fails it under ``CI=true`` (``conftest.skip_or_fail``).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TypeVar

from conftest import skip_or_fail  # tests/ is a rootdir, not a package
from tunnelws_testnet.peers import (
    MITMPROXY_VENV,
    Microsocks,
    Mitmproxy,
    Peer,
    Pproxy,
    ProxyProcess,
    Squid,
    Tinyproxy,
    run_proxy,
)

__all__ = [
    "MITMDUMP",
    "available",
    "run_mitmdump",
    "run_pproxy",
    "run_socks",
    "run_squid",
    "run_tinyproxy",
]

MITMDUMP = Path(__file__).resolve().parent.parent / MITMPROXY_VENV / "bin" / "mitmdump"

P = TypeVar("P", bound=Peer)


def available(peer: P) -> P:
    """``peer``, or skip (fail under CI=true) saying what to install."""
    reason = peer.missing()
    if reason is not None:
        skip_or_fail(reason)
    return peer


def _run(peer: Peer, tmp_path: Path) -> AbstractContextManager[ProxyProcess]:
    return run_proxy(available(peer), directory=tmp_path)


def run_pproxy(
    *, auth: tuple[str, str] | None = None, tmp_path: Path
) -> AbstractContextManager[ProxyProcess]:
    """pproxy as an HTTP proxy; ``auth``: Basic, re-checked on every connection."""
    return _run(Pproxy(auth=auth), tmp_path)


def run_squid(
    *,
    tmp_path: Path,
    allow_ports: Sequence[int] | None = (443,),
    safe_ports: Sequence[str] | None = None,
    basic_auth: tuple[str, str] | None = None,
    digest_auth: tuple[str, str] | None = None,
    negotiate_keytab: Path | None = None,
) -> AbstractContextManager[ProxyProcess]:
    """squid, by default with its stock CONNECT policy (443 only);
    ``negotiate_keytab`` demands Kerberos checked against that keytab."""
    peer = Squid(
        allow_ports=allow_ports,
        safe_ports=safe_ports,
        basic_auth=basic_auth,
        digest_auth=digest_auth,
        negotiate_keytab=negotiate_keytab,
    )
    return _run(peer, tmp_path)


def run_tinyproxy(
    *,
    tmp_path: Path,
    allow_ports: Sequence[int] | None = None,
    basic_auth: tuple[str, str] | None = None,
) -> AbstractContextManager[ProxyProcess]:
    """tinyproxy; ``allow_ports`` become ``ConnectPort`` lines."""
    return _run(Tinyproxy(allow_ports=allow_ports, basic_auth=basic_auth), tmp_path)


def run_socks(
    kind: str, tmp_path: Path, auth: tuple[str, str] | None = None
) -> AbstractContextManager[ProxyProcess]:
    """A SOCKS5 server: pproxy (``-l socks5://``) or microsocks."""
    peer: Peer = Pproxy(scheme="socks5", auth=auth) if kind == "pproxy" else Microsocks(auth=auth)
    return _run(peer, tmp_path)


def run_mitmdump(
    tmp_path: Path, *, ca_pem: bytes, upstream_ca: Path
) -> AbstractContextManager[ProxyProcess]:
    """mitmdump from ``.venv-mitmproxy``, signing with ``ca_pem`` (key and certificate)."""
    return _run(Mitmproxy(MITMDUMP, ca_pem, upstream_ca), tmp_path)
