"""tinyproxy (Debian) in the foreground with its own configuration.

Its quirks: it answers CONNECT with ``HTTP/1.0 200``; ``ConnectPort`` lines
are an allow-list for CONNECT (``ConnectPort 0`` refuses every CONNECT, no
line allows any port); started as root without ``User``/``Group`` lines it
stays root, so its files may live anywhere.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ._kind import Launch, ProxyRequest, check_config_safe, missing_binary, require_binary

__all__ = ["Tinyproxy", "parse_tinyproxy_log"]

_instances = itertools.count(1)
_REQUEST = re.compile(r"Request \(file descriptor \d+\): (\S+) (\S+)")


def parse_tinyproxy_log(text: str) -> list[ProxyRequest]:
    """Requests from tinyproxy's log (``Request (file descriptor N): METHOD TARGET``)."""
    return [
        ProxyRequest(method=m.group(1), target=m.group(2), event="request")
        for m in _REQUEST.finditer(text)
    ]


@dataclass(frozen=True)
class Tinyproxy:
    """tinyproxy for ``clients`` (its ``Allow``: an address or CIDR).

    allow_ports: ``ConnectPort`` lines (None: CONNECT to any port; ``()``:
        ``ConnectPort 0``, CONNECT refused everywhere).
    basic_auth: ``BasicAuth`` (realm "Tinyproxy").
    """

    allow_ports: Sequence[int] | None = None
    basic_auth: tuple[str, str] | None = None
    clients: str = "127.0.0.1"
    binary: str | None = None

    def __post_init__(self) -> None:
        if self.basic_auth is not None:
            check_config_safe(self.basic_auth[0], "tinyproxy user", '"')
            check_config_safe(self.basic_auth[1], "tinyproxy password", '"')

    @property
    def name(self) -> str:
        return "tinyproxy"

    def missing(self) -> str | None:
        return missing_binary("tinyproxy", self.binary)

    def launch(self, directory: Path, host: str, port: int) -> Launch:
        binary = require_binary("tinyproxy", self.binary)
        instance = f"tinyproxy-{next(_instances)}"
        log = directory / f"{instance}.log"
        lines = [
            f"Port {port}",
            f"Listen {host}",
            f"Allow {self.clients}",
            "Timeout 60",
            "MaxClients 50",
            f'LogFile "{log}"',
            "LogLevel Info",
            f'PidFile "{directory / f"{instance}.pid"}"',
        ]
        if self.allow_ports is not None:
            lines += [f"ConnectPort {int(p)}" for p in self.allow_ports] or ["ConnectPort 0"]
        if self.basic_auth is not None:
            lines.append("BasicAuth {} {}".format(*self.basic_auth))
        config = directory / f"{instance}.conf"
        config.write_text("\n".join(lines) + "\n")
        config.chmod(0o600)
        return Launch(
            name=self.name,
            argv=[binary, "-d", "-c", str(config)],
            host=host,
            port=port,
            scheme="http",
            output=directory / f"{instance}.out",
            log=log,
            parse=parse_tinyproxy_log,
        )
