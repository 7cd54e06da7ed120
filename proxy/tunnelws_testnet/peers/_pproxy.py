"""pproxy (PyPI), run with this interpreter: an HTTP or a SOCKS5 proxy.

Its quirks: it takes everything on its command line, ``-l URL`` with the
credentials as the URL's ``#user:pass`` fragment (so they show in ``ps``:
test credentials only); without ``--auth 0`` one good login whitelists the
client's address for a day, which would hide authentication bugs, so it is
always passed with credentials; ``-v`` prints one ``http CLIENT -> TARGET``
(or ``socks5 ...``) line per request, which is its log.
"""

from __future__ import annotations

import importlib.util
import itertools
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ._kind import Launch, ProxyRequest, check_config_safe

__all__ = ["Pproxy", "parse_pproxy_log"]

_instances = itertools.count(1)
_TUNNEL = re.compile(r"^(?:http|socks)\S* (\S+) -> (\S+)$", re.MULTILINE)


def parse_pproxy_log(text: str) -> list[ProxyRequest]:
    """Requests from pproxy's ``-v`` output (``http CLIENT -> TARGET`` per request,
    ``socks5 CLIENT -> TARGET`` per SOCKS connection).

    pproxy logs CONNECT tunnels, forwarded requests and SOCKS connections alike;
    all count as CONNECTs.
    """
    return [
        ProxyRequest(method="CONNECT", target=m.group(2), event="pproxy")
        for m in _TUNNEL.finditer(text)
    ]


@dataclass(frozen=True)
class Pproxy:
    """pproxy listening for ``scheme`` (``http``: CONNECT and forwarding;
    ``socks5``), demanding ``auth`` (Basic, or RFC 1929 for SOCKS5) on every
    connection when given."""

    scheme: Literal["http", "socks5"] = "http"
    auth: tuple[str, str] | None = None
    python: str = sys.executable

    def __post_init__(self) -> None:
        if self.auth is not None:
            check_config_safe(self.auth[0], "pproxy user", ":#")
            check_config_safe(self.auth[1], "pproxy password", "#")

    @property
    def name(self) -> str:
        return "pproxy"

    def missing(self) -> str | None:
        if self.python == sys.executable and importlib.util.find_spec("pproxy") is None:
            return "the pproxy package is not installed (pip install pproxy)"
        return None

    def launch(self, directory: Path, host: str, port: int) -> Launch:
        output = directory / f"pproxy-{next(_instances)}.log"
        bracketed = f"[{host}]" if ":" in host else host
        listen = f"{self.scheme}://{bracketed}:{port}"
        extra: list[str] = []
        if self.auth is not None:
            listen += "#{}:{}".format(*self.auth)
            extra = ["--auth", "0"]
        return Launch(
            name=self.name,
            argv=[self.python, "-u", "-m", "pproxy", "-l", listen, *extra, "-v"],
            host=host,
            port=port,
            scheme=self.scheme,
            output=output,
            log=output,
            parse=parse_pproxy_log,
        )
