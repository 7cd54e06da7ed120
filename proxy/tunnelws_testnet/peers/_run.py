"""Run a proxy peer on loopback for the duration of a block.

:func:`run_proxy` (a plain context manager: tests, benchmarks) and
:func:`open_proxy` (async, for a trio program that must not block) start a
:class:`~tunnelws_testnet.peers.Peer` on a free port, wait until it serves,
yield a :class:`ProxyProcess`, and stop it by PID on exit, also when the
block raises. A free port is found by binding port 0; if the proxy loses the
race for it, the start is retried once on another.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from ._kind import Launch, LogParser, Peer, PeerStartError, PeerUnavailableError, ProxyRequest
from ._process import POLL, spawn, stop

__all__ = ["ProxyProcess", "free_port", "open_proxy", "run_proxy"]

STOP_GRACE = 5.0  # seconds between the stop signal and SIGKILL
LOG_WAIT = 5.0  # seconds to wait for an expected log line
LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A port nobody listens on right now (racy by nature: see the retry)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class ProxyProcess:
    """A proxy process serving on ``host:port``."""

    name: str
    url: str  # without credentials: http://127.0.0.1:PORT, socks5://...
    host: str
    port: int
    pid: int
    log_path: Path | None  # after the stop, where the log was kept
    parse: LogParser = field(repr=False)
    _launch: Launch = field(repr=False)
    _process: subprocess.Popen[bytes] = field(repr=False)

    def access_log(self) -> str:
        """The proxy's own log so far ("" when it has none yet): squid's
        access.log (a CONNECT is logged when its tunnel closes), tinyproxy's
        log file, pproxy's and microsocks's output, the companion's JSON lines."""
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def requests(self) -> list[ProxyRequest]:
        """The requests in :meth:`access_log`, parsed."""
        return self.parse(self.access_log())

    def wait_for_access_log(self, needle: str, timeout: float = LOG_WAIT) -> str:
        """Block until ``needle`` appears in the log; return the log.

        Proxies write their log lines asynchronously (squid only when a tunnel
        has closed), so assertions on the log should wait instead of reading once.
        """
        deadline = time.monotonic() + timeout
        while True:
            text = self.access_log()
            if needle in text:
                return text
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{needle!r} not in {self.name} log after {timeout} s:\n{text[-2000:]}"
                )
            time.sleep(0.05)

    async def wait_for_access_log_async(self, needle: str) -> str:
        """Like :meth:`wait_for_access_log` (bounded by LOG_WAIT), sleeping
        with trio; wrap it in ``trio.fail_after`` for a tighter bound."""
        with trio.move_on_after(LOG_WAIT):
            while True:
                text = self.access_log()
                if needle in text:
                    return text
                await trio.sleep(0.05)
        raise AssertionError(
            f"{needle!r} not in {self.name} log after {LOG_WAIT} s:\n{self.access_log()[-2000:]}"
        )


def _serving(launch: Launch, process: subprocess.Popen[bytes], deadline: float) -> bool:
    """True once it serves; raises :class:`PeerStartError` when it exited or
    ``deadline`` (``time.monotonic()``) has passed."""
    if launch.ready(process.pid):
        return True
    if process.poll() is not None:
        raise PeerStartError(
            f"{launch.name} exited with status {process.returncode} before serving on "
            f"port {launch.port}:\n{launch.diagnostics()}"
        )
    if time.monotonic() >= deadline:
        raise PeerStartError(
            f"{launch.name} not serving on port {launch.port} after {launch.start_timeout} s:"
            f"\n{launch.diagnostics()}"
        )
    return False


def _stop(launch: Launch, process: subprocess.Popen[bytes]) -> None:
    try:
        stop(process, launch.stop_signal, STOP_GRACE)
    finally:
        launch.finish()


def _start(peer: Peer, directory: Path, host: str, port: int | None) -> ProxyProcess:
    """Start ``peer`` and wait until it serves (blocking: the polling is
    short, and :func:`open_proxy` runs this in a thread)."""
    reason = peer.missing()
    if reason is not None:
        raise PeerUnavailableError(reason)
    directory.mkdir(parents=True, exist_ok=True)
    attempts = 1 if port is not None else 2
    for attempt in range(1, attempts + 1):
        launch = peer.launch(directory, host, free_port(host) if port is None else port)
        try:
            process = spawn(launch.argv, launch.output)
        except BaseException:
            launch.finish()
            raise
        deadline = time.monotonic() + launch.start_timeout
        try:
            while not _serving(launch, process, deadline):
                time.sleep(POLL)
        except BaseException as exc:  # also KeyboardInterrupt: never leak the process
            _stop(launch, process)
            if attempt == attempts or not isinstance(exc, PeerStartError):
                raise
            continue
        return ProxyProcess(
            name=launch.name,
            url=launch.url,
            host=launch.host,
            port=launch.port,
            pid=process.pid,
            log_path=launch.log,
            parse=launch.parse,
            _launch=launch,
            _process=process,
        )
    raise AssertionError("unreachable")


def _stopped(running: ProxyProcess) -> None:
    _stop(running._launch, running._process)
    running.log_path = running._launch.final_log


@contextmanager
def run_proxy(
    peer: Peer, *, directory: Path, host: str = LOOPBACK, port: int | None = None
) -> Iterator[ProxyProcess]:
    """Run ``peer`` on ``host:port`` (a free port when None) until the block ends.

    Raises :class:`PeerUnavailableError` when it cannot run here and
    :class:`PeerStartError` when it does not come up.
    """
    running = _start(peer, directory, host, port)
    try:
        yield running
    finally:
        _stopped(running)


@asynccontextmanager
async def open_proxy(
    peer: Peer, *, directory: Path, host: str = LOOPBACK, port: int | None = None
) -> AsyncIterator[ProxyProcess]:
    """:func:`run_proxy` for trio: starting and stopping run in a thread, so
    the other tasks keep running."""
    running = await trio.to_thread.run_sync(_start, peer, directory, host, port)
    try:
        yield running
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_stopped, running)
