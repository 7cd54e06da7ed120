"""Debian's OpenSSH server as a test peer: sshd on loopback with its own
configuration, host key and one authorised client key, all under
``tmp_path`` (never the system's /etc/ssh). Started like the proxy peers,
by :func:`tunnelws_testnet.peers.run_proxy` (a :class:`Peer` is any server
with a command line)."""

from __future__ import annotations

import contextlib
import getpass
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from conftest import require_binary
from peers import available
from tunnelws_testnet.peers import Launch, find_binary, run_proxy

__all__ = ["SshServer", "run_sshd"]


@dataclass
class SshServer:
    host: str
    port: int
    user: str
    client_key: Path  # private key the server accepts
    known_hosts: Path


def _keygen(path: Path) -> None:
    if not path.exists():
        keygen = require_binary("ssh-keygen")
        subprocess.run(
            [keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30
        )


@dataclass(frozen=True)
class Sshd:
    """sshd accepting ``client_key`` (public key authentication only)."""

    client_key: Path

    @property
    def name(self) -> str:
        return "sshd"

    def missing(self) -> str | None:
        if find_binary("sshd") is None or find_binary("ssh") is None:
            return "sshd/ssh are not installed (Debian packages openssh-server, openssh-client)"
        return None

    def launch(self, directory: Path, host: str, port: int) -> Launch:
        sshd = require_binary("sshd")  # an absolute path: sshd re-executes itself
        host_key = directory / "host_key"
        _keygen(host_key)
        authorized = directory / "authorized_keys"
        authorized.write_text(self.client_key.with_suffix(".pub").read_text())
        authorized.chmod(0o600)
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation
        config = directory / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {port}",
                    f"ListenAddress {host}",
                    f"HostKey {host_key}",
                    "PidFile none",
                    f"AuthorizedKeysFile {authorized}",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",  # tmp_path's owners and modes are pytest's
                    "PermitRootLogin prohibit-password",
                    "LogLevel VERBOSE",
                ]
            )
            + "\n"
        )
        return Launch(
            name="sshd",
            argv=[sshd, "-D", "-e", "-f", str(config)],
            host=host,
            port=port,
            scheme="ssh",
            output=directory / "sshd.out",
        )


@contextlib.contextmanager
def run_sshd(tmp_path: Path) -> Iterator[SshServer]:
    directory = tmp_path / "sshd"
    directory.mkdir(parents=True, exist_ok=True)
    peer = available(Sshd(directory / "client_key"))
    _keygen(peer.client_key)
    with run_proxy(peer, directory=directory) as process:
        yield SshServer(
            process.host, process.port, getpass.getuser(), peer.client_key, directory / "known"
        )
