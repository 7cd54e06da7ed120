"""Process plumbing for proxy peers: find a binary, spawn, probe, stop by PID.

Everything here works on PIDs the caller started: readiness is read from
``/proc`` (the PID owns a listening socket on the port, in whatever network
namespace it runs), and stopping sends the peer's stop signal to that PID,
then SIGKILL, then the same to the helper processes it started (squid's auth
helpers run in sessions of their own, so a process-group kill misses them).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "alive",
    "children",
    "find_binary",
    "listening",
    "spawn",
    "stop",
    "tail",
]

POLL = 0.02
_SYSTEM_DIRS = ("/usr/sbin", "/usr/bin", "/sbin")


def find_binary(name: str) -> str | None:
    """``name`` on PATH, else in the system directories root's PATH has
    (``/usr/sbin`` is often missing from a user's PATH); None if absent."""
    found = shutil.which(name)
    if found is not None:
        return found
    return next((f"{d}/{name}" for d in _SYSTEM_DIRS if os.access(f"{d}/{name}", os.X_OK)), None)


def tail(path: Path, limit: int = 3000) -> str:
    """The last ``limit`` characters of a file ("" when unreadable)."""
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) from /proc, or None when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    """Whether ``pid`` runs; zombies count as gone (PID 1 in a container may
    never reap them)."""
    if Path("/proc").is_dir():
        stat = _stat(pid)
        return stat is not None and stat[0] != "Z"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def children(pid: int) -> list[int]:
    """Live child PIDs of ``pid`` (empty without /proc)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    found = []
    for entry in proc.iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[1] == pid and stat[0] != "Z":
                found.append(int(entry.name))
    return found


def _listening_inodes(pid: int, port: int) -> set[str]:
    # /proc/PID/net/* shows the sockets of PID's network namespace.
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def listening(pid: int, host: str, port: int) -> bool:
    """True once ``pid`` itself holds a listening socket on ``port``.

    On Linux this reads /proc instead of connecting, so the probe leaves no
    line in the proxy's log and a stranger holding the port does not count.
    Elsewhere it falls back to connecting to ``host:port``.
    """
    if Path("/proc/net/tcp").exists():
        inodes = _listening_inodes(pid, port)
        if not inodes:
            return False
        try:
            targets = {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
        except OSError:
            return False
        return any(f"socket:[{inode}]" in targets for inode in inodes)
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def spawn(argv: Sequence[str], output: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` with stdout and stderr into ``output``, in a session of
    its own (a Ctrl-C meant for the caller does not race its teardown)."""
    with output.open("wb") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_gone(pids: Sequence[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    left = [pid for pid in pids if alive(pid)]
    while left and time.monotonic() < deadline:
        time.sleep(POLL)
        left = [pid for pid in left if alive(pid)]
    return left


def stop(process: subprocess.Popen[bytes], stop_signal: int, grace: float) -> None:
    """``stop_signal``, SIGKILL after ``grace`` seconds; then the same for the
    helpers it had started. Raises if anything it started is still alive."""
    helpers = children(process.pid)
    if process.poll() is None:
        process.send_signal(stop_signal)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=grace)
    # Helpers exit on stdin EOF once their parent is gone; give them a moment.
    for pid in _wait_gone(helpers, 2.0):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    left = _wait_gone(helpers, 2.0)
    if left:
        raise RuntimeError(f"processes left after stopping PID {process.pid}: {left}")
