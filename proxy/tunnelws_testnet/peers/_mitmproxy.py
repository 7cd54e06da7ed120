"""mitmproxy's ``mitmdump``: a real TLS-intercepting proxy.

It lives in a virtualenv of its own, ``.venv-mitmproxy`` at the repository
root (its pinned dependencies clash with ours; 11.x runs on Python 3.11):
``python3 -m venv .venv-mitmproxy && .venv-mitmproxy/bin/pip install
'mitmproxy>=11,<12'`` (``make .venv-mitmproxy/.installed``). It signs with the
CA in ``CONFDIR/mitmproxy-ca.pem`` (key and certificate), which this module
writes from the CA you give it. With ``flow_detail=1`` its output is its log:
``CLIENT: METHOD URL`` per request (the tunnels it intercepts show as the
requests inside them, ``GET https://...``), then ``<< STATUS ...``.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

from ._kind import Launch, PeerUnavailableError, ProxyRequest

__all__ = ["MITMPROXY_VENV", "Mitmproxy", "parse_mitmproxy_log"]

#: Where the Makefile puts mitmproxy's virtualenv, relative to the repository root.
MITMPROXY_VENV = Path(".venv-mitmproxy")
READY_LINE = "proxy listening at"
_instances = itertools.count(1)
_FLOW = re.compile(
    r"^\S+: (?P<method>[A-Z]+) (?P<target>\S+)(?: HTTP/\S+)?\n"
    r"\s+<< (?:HTTP/\S+ )?(?P<status>\d{3})?",
    re.MULTILINE,
)


def parse_mitmproxy_log(text: str) -> list[ProxyRequest]:
    """Requests from mitmdump's ``flow_detail=1`` output."""
    return [
        ProxyRequest(
            method=m["method"],
            target=m["target"],
            status=int(m["status"]) if m["status"] else None,
            event="mitmproxy",
        )
        for m in _FLOW.finditer(text)
    ]


@dataclass(frozen=True)
class Mitmproxy:
    """mitmdump signing with ``ca_pem`` (the CA's key and certificate, PEM),
    verifying origins against ``upstream_ca`` (its
    ``ssl_verify_upstream_trusted_ca``). ``mitmdump``: the executable
    (``<repository>/.venv-mitmproxy/bin/mitmdump``)."""

    mitmdump: Path
    ca_pem: bytes = field(repr=False)
    upstream_ca: Path | None = None

    @property
    def name(self) -> str:
        return "mitmproxy"

    def missing(self) -> str | None:
        if not self.mitmdump.exists():
            venv = MITMPROXY_VENV
            return (
                f"{self.mitmdump} is missing: python3 -m venv {venv} &&"
                f" {venv}/bin/pip install 'mitmproxy>=11,<12'"
            )
        return None

    def launch(self, directory: Path, host: str, port: int) -> Launch:
        reason = self.missing()
        if reason is not None:
            raise PeerUnavailableError(reason)
        instance = f"mitmproxy-{next(_instances)}"
        confdir = directory / instance
        confdir.mkdir(parents=True, exist_ok=True)
        ca_file = confdir / "mitmproxy-ca.pem"
        ca_file.write_bytes(self.ca_pem)
        ca_file.chmod(0o600)
        argv = [str(self.mitmdump), "--listen-host", host, "--listen-port", str(port)]
        argv += ["--set", f"confdir={confdir}", "--set", "flow_detail=1"]
        if self.upstream_ca is not None:
            argv += ["--set", f"ssl_verify_upstream_trusted_ca={self.upstream_ca}"]
        output = directory / f"{instance}.out"
        return Launch(
            name=self.name,
            argv=argv,
            host=host,
            port=port,
            scheme="http",
            output=output,
            log=output,
            parse=parse_mitmproxy_log,
            ready_line=READY_LINE,
            start_timeout=20.0,
        )
