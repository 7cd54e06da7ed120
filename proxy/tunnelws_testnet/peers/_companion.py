"""The companion proxy as a process: ``tunnelws proxy`` with a JSON log.

(In the same trio run, :func:`tunnelws_testnet.companion.serve_proxy` runs it
without a process.)
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass
from pathlib import Path

from ..companion import CA_FILE_NAME
from ._kind import Launch, ProxyRequest, json_records

__all__ = [
    "READY_LINE",
    "CompanionProxy",
    "NtlmMessage",
    "parse_authentications",
    "parse_companion_log",
    "parse_ntlm_messages",
]

READY_LINE = "tunnelws proxy listening on"
_instances = itertools.count(1)


@dataclass(frozen=True)
class NtlmMessage:
    """One NTLM message the companion decoded (type 1, 2 or 3) and its connection."""

    connection: str  # the client's address:port as the proxy saw it
    type: int


def parse_companion_log(text: str) -> list[ProxyRequest]:
    """Requests from the companion proxy's JSON log (one object per line)."""
    requests = []
    for record in json_records(text):
        if record.get("method"):
            status = record.get("status")
            requests.append(
                ProxyRequest(
                    method=str(record["method"]),
                    target=str(record.get("target", "")),
                    status=status if isinstance(status, int) else None,
                    event=str(record.get("event", "")),
                )
            )
    return requests


def parse_ntlm_messages(text: str) -> list[NtlmMessage]:
    """The companion's ``auth-message`` records (decoded NTLM messages)."""
    messages = []
    for record in json_records(text):
        ntlm = record.get("ntlm")
        if (
            record.get("event") == "auth-message"
            and isinstance(ntlm, dict)
            and isinstance(ntlm.get("type"), int)
        ):
            messages.append(NtlmMessage(str(record.get("client", "")), ntlm["type"]))
    return messages


def parse_authentications(text: str) -> list[tuple[str, str]]:
    """(user, mechanism) of each tunnel the companion logged as authenticated
    by NTLM or Negotiate (``mechanism``: ``"ntlm"`` or ``"kerberos"``)."""
    return [
        (str(record["user"]), str(record["mechanism"]))
        for record in json_records(text)
        if record.get("event") == "tunnel" and record.get("user") and record.get("mechanism")
    ]


@dataclass(frozen=True)
class CompanionProxy:
    """``tunnelws proxy`` with ``options`` (its command-line options:
    ``--auth``, ``--quirk``, ``--transparent``, ...).

    ``tls``: (certificate, key) PEM files: an ``https://`` proxy.
    ``intercept_ca_dir``: re-sign TLS (``--intercept``) with a CA kept there
    (:attr:`intercept_ca`), verifying origins against ``onward_ca``.
    Ready when it prints ``tunnelws proxy listening on``.
    """

    options: tuple[str, ...] = ()
    tls: tuple[Path, Path] | None = None
    intercept_ca_dir: Path | None = None
    onward_ca: Path | None = None
    python: str = sys.executable

    @property
    def name(self) -> str:
        return "companion proxy"

    @property
    def intercept_ca(self) -> Path | None:
        """The interception CA's certificate, once the proxy has started."""
        return None if self.intercept_ca_dir is None else self.intercept_ca_dir / CA_FILE_NAME

    def missing(self) -> str | None:
        return None

    def launch(self, directory: Path, host: str, port: int) -> Launch:
        instance = f"companion-{next(_instances)}"
        log = directory / f"{instance}.jsonl"
        log.touch()
        listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        argv = [self.python, "-m", "tunnelws", "proxy", "--listen", listen, "--log", str(log)]
        argv += self.options
        if self.tls is not None:
            argv += ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]
        if self.intercept_ca_dir is not None:
            argv += ["--intercept", "--ca-dir", str(self.intercept_ca_dir)]
            if self.onward_ca is not None:
                argv += ["--onward-ca", str(self.onward_ca)]
        return Launch(
            name=self.name,
            argv=argv,
            host=host,
            port=port,
            scheme="https" if self.tls is not None else "http",
            output=directory / f"{instance}.out",
            log=log,
            parse=parse_companion_log,
            ready_line=READY_LINE,
        )
