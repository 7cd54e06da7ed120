"""microsocks (Debian): a small SOCKS5 server in C.

Its output is its log: ``client[N] ADDR: connected to HOST:PORT`` per
connection. It resolves names itself (SOCKS5h) and answers a failed
connection with a SOCKS error reply.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from ._kind import Launch, ProxyRequest, missing_binary, require_binary

__all__ = ["Microsocks", "parse_microsocks_log"]

_instances = itertools.count(1)
_CONNECT = re.compile(r"^client\[\d+\] (\S+): connected to (\S+)$", re.MULTILINE)


def parse_microsocks_log(text: str) -> list[ProxyRequest]:
    """Connections from microsocks's output (``client[N] ADDR: connected to HOST:PORT``);
    each counts as a CONNECT."""
    return [
        ProxyRequest(method="CONNECT", target=m.group(2), event="microsocks")
        for m in _CONNECT.finditer(text)
    ]


@dataclass(frozen=True)
class Microsocks:
    """microsocks, demanding ``auth`` (RFC 1929 user name and password) when given."""

    auth: tuple[str, str] | None = None
    binary: str | None = None

    @property
    def name(self) -> str:
        return "microsocks"

    def missing(self) -> str | None:
        return missing_binary("microsocks", self.binary)

    def launch(self, directory: Path, host: str, port: int) -> Launch:
        binary = require_binary("microsocks", self.binary)
        output = directory / f"microsocks-{next(_instances)}.log"
        argv = [binary, "-i", host, "-p", str(port)]
        if self.auth is not None:
            argv += ["-u", self.auth[0], "-P", self.auth[1]]
        return Launch(
            name=self.name,
            argv=argv,
            host=host,
            port=port,
            scheme="socks5",
            output=output,
            log=output,
            parse=parse_microsocks_log,
        )
