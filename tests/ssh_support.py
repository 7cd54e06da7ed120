"""Debian's OpenSSH server as a test peer: sshd on loopback with its own
configuration, host key and one authorised client key, all under
``tmp_path`` (never the system's /etc/ssh)."""

from __future__ import annotations

import contextlib
import getpass
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from conftest import require_binary
from peers import _Process, _spawn, _start_with_retry, _stop, _tail

__all__ = ["SshServer", "run_sshd"]


@dataclass
class SshServer:
    host: str
    port: int
    user: str
    client_key: Path  # private key the server accepts
    known_hosts: Path


def _keygen(path: Path) -> None:
    keygen = require_binary("ssh-keygen")
    subprocess.run(
        [keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30
    )


@contextlib.contextmanager
def run_sshd(tmp_path: Path) -> Iterator[SshServer]:
    sshd = require_binary("sshd")  # an absolute path: sshd re-executes itself
    require_binary("ssh")
    directory = tmp_path / "sshd"
    directory.mkdir(parents=True, exist_ok=True)
    host_key, client_key = directory / "host_key", directory / "client_key"
    _keygen(host_key)
    _keygen(client_key)
    authorized = directory / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    authorized.chmod(0o600)
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    output = directory / "sshd.out"

    def launch(port: int) -> tuple[_Process, Callable[[], str]]:
        config = directory / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {port}",
                    "ListenAddress 127.0.0.1",
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
        process = _spawn([sshd, "-D", "-e", "-f", str(config)], output)
        return process, lambda: _tail(output)

    process, port = _start_with_retry(launch)
    try:
        yield SshServer("127.0.0.1", port, getpass.getuser(), client_key, directory / "known")
    finally:
        _stop(process)
