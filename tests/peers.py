"""Launch real third-party proxies (pproxy, squid, tinyproxy) as test peers.

Each launcher is a synchronous context manager that starts the proxy on a free
loopback port with its own configuration under ``tmp_path``, waits until the
proxy is listening, yields a :class:`RunningProxy`, and stops it by PID on exit
(also when the test body raises).  Start-up waits are short, so the launchers
can be used from trio tests too.

A missing binary skips the test on a laptop and fails it under ``CI=true``
(see ``conftest.require_binary``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from conftest import require_binary  # tests/ is a rootdir, not a package

__all__ = [
    "SQUID_BASIC_REALM",
    "SQUID_DIGEST_REALM",
    "PeerStartError",
    "RunningProxy",
    "run_pproxy",
    "run_squid",
    "run_tinyproxy",
]

SQUID_BASIC_REALM = "tunnelws-squid-basic"
SQUID_DIGEST_REALM = "tunnelws-squid-digest"

START_TIMEOUT = 10.0  # seconds until the proxy must be listening
STOP_GRACE = 5.0  # seconds between the stop signal and SIGKILL (squid needs ~2 s)
LOG_WAIT = 5.0  # seconds to wait for an expected log line
_POLL = 0.02

_instance_counter = itertools.count(1)


class PeerStartError(RuntimeError):
    """The proxy did not come up; the message carries the tail of its output."""


@dataclass
class RunningProxy:
    """A proxy process listening on ``host:port`` (loopback)."""

    url: str
    host: str
    port: int
    pid: int
    name: str
    log_path: Path | None

    def access_log(self) -> str:
        """Current contents of the proxy's own log ("" when it has none yet).

        squid: one line per transaction (a CONNECT is logged when its tunnel
        closes); tinyproxy: its log file; pproxy: its ``-v`` output, one
        ``http CLIENT -> TARGET`` line per tunnel.
        """
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

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
        """Like :meth:`wait_for_access_log` (bounded by LOG_WAIT), sleeping with trio.

        Wrap it in ``trio.fail_after`` for a tighter bound.
        """
        with trio.move_on_after(LOG_WAIT):
            while True:
                text = self.access_log()
                if needle in text:
                    return text
                await trio.sleep(0.05)
        raise AssertionError(
            f"{needle!r} not in {self.name} log after {LOG_WAIT} s:\n{self.access_log()[-2000:]}"
        )


# --------------------------------------------------------------------------
# process plumbing


def _free_port() -> int:
    # Racy by nature (someone may take the port before the proxy binds it);
    # _start_with_retry retries once with a fresh port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _check_secret_free(value: str, what: str, forbidden: str) -> None:
    bad = [c for c in forbidden if c in value]
    if not value or bad or any(c.isspace() for c in value):
        # Never echo the value itself: it may be a password.
        raise ValueError(f"{what} must be non-empty without whitespace or {forbidden!r}")


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) from /proc, or None when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def _children(pid: int) -> list[int]:
    """Live child PIDs (squid starts its auth helpers in their own sessions,
    so they escape a process-group kill and must be tracked by PID)."""
    found: list[int] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None and stat[1] == pid and stat[0] != "Z":
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    if Path("/proc").is_dir():
        stat = _proc_stat(pid)
        # Zombies count as dead: PID 1 in a container may never reap them.
        return stat is not None and stat[0] != "Z"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def _is_listening(pid: int, host: str, port: int) -> bool:
    """True once *our* process holds a listening socket on ``port``.

    On Linux this reads /proc instead of connecting, so the readiness probe
    leaves no stray line in the proxy's access log and cannot be fooled by a
    stranger who grabbed the port.  Elsewhere it falls back to connecting.
    """
    if Path("/proc/net/tcp").exists():
        inodes = _listening_inodes(port)
        if not inodes:
            return False
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            targets = {os.readlink(fd) for fd in fd_dir.iterdir()}
        except OSError:
            return False
        return any(f"socket:[{inode}]" in targets for inode in inodes)
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _tail(path: Path, limit: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


@dataclass
class _Process:
    popen: subprocess.Popen[bytes]
    output_path: Path
    stop_signal: signal.Signals

    @property
    def pid(self) -> int:
        return self.popen.pid


def _spawn(
    argv: Sequence[str], output_path: Path, stop_signal: signal.Signals = signal.SIGTERM
) -> _Process:
    with output_path.open("wb") as output:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            # Own session: a Ctrl-C meant for pytest does not race our teardown.
            start_new_session=True,
        )
    return _Process(popen, output_path, stop_signal)


def _wait_listening(process: _Process, port: int, diagnostics: Callable[[], str]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not _is_listening(process.pid, "127.0.0.1", port):
        if process.popen.poll() is not None:
            raise PeerStartError(
                f"exited with status {process.popen.returncode} before listening on "
                f"port {port}:\n{diagnostics()}"
            )
        if time.monotonic() >= deadline:
            raise PeerStartError(
                f"not listening on port {port} after {START_TIMEOUT} s:\n{diagnostics()}"
            )
        time.sleep(_POLL)


def _stop(process: _Process) -> None:
    """Stop signal, then SIGKILL after STOP_GRACE; the same for helper children.

    Raises if anything we started is still alive afterwards.
    """
    helpers = _children(process.pid)
    if process.popen.poll() is None:
        process.popen.send_signal(process.stop_signal)
        try:
            process.popen.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            process.popen.kill()
            process.popen.wait(timeout=STOP_GRACE)
    # Helpers exit on stdin EOF once their parent is gone; give them a moment.
    deadline = time.monotonic() + 2.0
    while any(_alive(pid) for pid in helpers) and time.monotonic() < deadline:
        time.sleep(_POLL)
    for pid in helpers:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    left = [pid for pid in helpers if _alive(pid)]
    while left and time.monotonic() < deadline:
        time.sleep(_POLL)
        left = [pid for pid in helpers if _alive(pid)]
    if left:
        raise RuntimeError(f"processes left after stopping PID {process.pid}: {left}")


def _start_with_retry(
    launch: Callable[[int], tuple[_Process, Callable[[], str]]],
) -> tuple[_Process, int]:
    """Start on a free port; retry once with another port if start-up fails."""
    for attempt in (1, 2):
        port = _free_port()
        process, diagnostics = launch(port)
        try:
            _wait_listening(process, port, diagnostics)
        except BaseException as exc:  # also KeyboardInterrupt/skip: never leak it
            _stop(process)
            if attempt == 2 or not isinstance(exc, PeerStartError):
                raise
        else:
            return process, port
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _running(process: _Process, proxy: RunningProxy) -> Iterator[RunningProxy]:
    try:
        yield proxy
    finally:
        _stop(process)


# --------------------------------------------------------------------------
# pproxy


@contextlib.contextmanager
def run_pproxy(*, auth: tuple[str, str] | None = None, tmp_path: Path) -> Iterator[RunningProxy]:
    """Run pproxy (PyPI) as an HTTP CONNECT proxy.

    With ``auth`` it demands Basic credentials and re-checks them on every
    connection (``--auth 0``; by default pproxy trusts a client IP for a day
    after one good login, which would hide auth bugs).
    """
    # pproxy takes Basic credentials as a URL fragment (so they are visible in
    # the process list: use throw-away test credentials only).
    fragment = ""
    if auth is not None:
        _check_secret_free(auth[0], "pproxy user", ":#")
        _check_secret_free(auth[1], "pproxy password", "#")
        fragment = f"#{auth[0]}:{auth[1]}"
    tmp_path.mkdir(parents=True, exist_ok=True)
    output_path = tmp_path / f"pproxy-{next(_instance_counter)}.log"

    def launch(port: int) -> tuple[_Process, Callable[[], str]]:
        listen = f"http://127.0.0.1:{port}{fragment}"
        argv = [sys.executable, "-u", "-m", "pproxy", "-l", listen, "-v"]
        if auth is not None:
            argv += ["--auth", "0"]
        process = _spawn(argv, output_path)
        return process, lambda: _tail(output_path)

    process, port = _start_with_retry(launch)
    proxy = RunningProxy(
        url=f"http://127.0.0.1:{port}",
        host="127.0.0.1",
        port=port,
        pid=process.pid,
        name="pproxy",
        log_path=output_path,
    )
    with _running(process, proxy) as running:
        yield running


# --------------------------------------------------------------------------
# squid


def _apr1_hash(password: str) -> str:
    # crypt() is gone from Python 3.13; basic_ncsa_auth understands Apache's
    # $apr1$ MD5 format, which openssl produces.  -stdin keeps the password
    # out of the process list.
    openssl = require_binary("openssl")
    result = subprocess.run(
        [openssl, "passwd", "-apr1", "-stdin"],
        input=password + "\n",
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    return result.stdout.strip()


def _squid_user() -> pwd.struct_passwd | None:
    """The user squid drops to when started as root (None when not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("proxy", "squid", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("no unprivileged user (proxy/squid/nobody) for squid to run as")


def _squid_config(
    *,
    port: int,
    run_dir: Path,
    effective_user: str | None,
    allow_ports: Sequence[int] | None,
    basic_file: Path | None,
    digest_file: Path | None,
    keytab: Path | None = None,
) -> str:
    lines = [
        f"http_port 127.0.0.1:{port}",
        "pid_filename none",
        "cache deny all",
        "cache_mem 1 MB",
        f"access_log stdio:{run_dir / 'access.log'}",
        "buffered_logs off",
        f"cache_log {run_dir / 'cache.log'}",
        "cache_store_log none",
        "logfile_rotate 0",
        f"coredump_dir {run_dir}",
        "shutdown_lifetime 1 seconds",
        "pinger_enable off",
        "visible_hostname tunnelws-squid",
    ]
    if effective_user is not None:
        lines.append(f"cache_effective_user {effective_user}")
    helpers = "/usr/lib/squid"
    if basic_file is not None:
        lines += [
            f"auth_param basic program {helpers}/basic_ncsa_auth {basic_file}",
            "auth_param basic children 2",
            f"auth_param basic realm {SQUID_BASIC_REALM}",
        ]
    if digest_file is not None:
        lines += [
            f"auth_param digest program {helpers}/digest_file_auth {digest_file}",
            "auth_param digest children 2",
            f"auth_param digest realm {SQUID_DIGEST_REALM}",
        ]
    if keytab is not None:
        # Any HTTP/<host> key of the keytab; no replay cache to keep writable.
        lines += [
            f"auth_param negotiate program {helpers}/negotiate_kerberos_auth "
            f"-k {keytab} -s GSS_C_NO_NAME -t none",
            "auth_param negotiate children 2",
            "auth_param negotiate keep_alive on",
        ]
    lines.append("acl CONNECT method CONNECT")
    # Port policy first, as in squid's stock config: a CONNECT to a forbidden
    # port is refused with 403 before authentication is asked for.
    if allow_ports is not None:
        if allow_ports:
            lines.append("acl tunnel_ports port " + " ".join(str(int(p)) for p in allow_ports))
            lines.append("http_access deny CONNECT !tunnel_ports")
        else:
            lines.append("http_access deny CONNECT")
    if basic_file is not None or digest_file is not None or keytab is not None:
        lines += ["acl authenticated proxy_auth REQUIRED", "http_access deny !authenticated"]
    # `localhost` is predefined by squid (127.0.0.1/32 and ::1).
    lines += ["http_access allow localhost", "http_access deny all"]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def run_squid(
    *,
    tmp_path: Path,
    allow_ports: Sequence[int] | None = (443,),
    basic_auth: tuple[str, str] | None = None,
    digest_auth: tuple[str, str] | None = None,
    negotiate_keytab: Path | None = None,
) -> Iterator[RunningProxy]:
    """Run squid with a private, unprivileged-safe configuration.

    ``allow_ports`` mirrors squid's stock policy (CONNECT only to 443); pass
    ``None`` to allow CONNECT to any port, ``()`` to refuse every CONNECT.
    ``basic_auth`` / ``digest_auth`` demand credentials (realms
    ``SQUID_BASIC_REALM`` / ``SQUID_DIGEST_REALM``); with both, squid offers both.
    ``negotiate_keytab`` demands Negotiate (Kerberos), checked by squid's
    ``negotiate_kerberos_auth`` helper against a copy of that keytab.

    Started as root, squid drops to the ``proxy`` user, which cannot reach
    pytest's 0700 ``tmp_path``; its files then live in a private directory under
    the system temp dir, copied into ``tmp_path`` on exit (``log_path`` is
    updated to the copy).
    """
    if basic_auth is not None:
        _check_secret_free(basic_auth[0], "squid basic user", ":")
    if digest_auth is not None:
        _check_secret_free(digest_auth[0], "squid digest user", ":")
        _check_secret_free(digest_auth[1], "squid digest password", "")
    squid = require_binary("squid")
    tmp_path.mkdir(parents=True, exist_ok=True)
    instance = f"twsquid{os.getpid()}n{next(_instance_counter)}"
    user = _squid_user()
    if user is None:
        run_dir = tmp_path / instance
        run_dir.mkdir()
    else:
        run_dir = Path(tempfile.mkdtemp(prefix=f"{instance}-"))
        os.chown(run_dir, user.pw_uid, user.pw_gid)

    def private_file(name: str, content: str) -> Path:
        path = run_dir / name
        path.write_text(content)
        path.chmod(0o600)
        if user is not None:
            os.chown(path, user.pw_uid, user.pw_gid)
        return path

    basic_file = digest_file = None
    if basic_auth is not None:
        basic_file = private_file(
            "basic.htpasswd", f"{basic_auth[0]}:{_apr1_hash(basic_auth[1])}\n"
        )
    if digest_auth is not None:
        # digest_file_auth without -c reads plain "user:password" lines.
        digest_file = private_file("digest.passwd", f"{digest_auth[0]}:{digest_auth[1]}\n")
    keytab = None
    if negotiate_keytab is not None:
        keytab = run_dir / "http.keytab"  # a copy the proxy user may read
        shutil.copy(negotiate_keytab, keytab)
        keytab.chmod(0o600)
        if user is not None:
            os.chown(keytab, user.pw_uid, user.pw_gid)
    access_path = run_dir / "access.log"
    cache_log = run_dir / "cache.log"

    def launch(port: int) -> tuple[_Process, Callable[[], str]]:
        config = private_file(
            "squid.conf",
            _squid_config(
                port=port,
                run_dir=run_dir,
                effective_user=None if user is None else user.pw_name,
                allow_ports=allow_ports,
                basic_file=basic_file,
                digest_file=digest_file,
                keytab=keytab,
            ),
        )
        # -N: no daemon, the master is the only worker, so its PID is ours.
        argv = [squid, "-N", "-f", str(config), "-n", instance]
        # SIGINT is squid's "shut down now" (squid -k interrupt): it skips the
        # shutdown_lifetime wait that SIGTERM grants clients, saving ~1 s per instance.
        process = _spawn(argv, tmp_path / f"{instance}.out", signal.SIGINT)
        return process, lambda: _tail(process.output_path) + _tail(cache_log)

    proxy: RunningProxy | None = None
    try:
        process, port = _start_with_retry(launch)
        proxy = RunningProxy(
            url=f"http://127.0.0.1:{port}",
            host="127.0.0.1",
            port=port,
            pid=process.pid,
            name="squid",
            log_path=access_path,
        )
        with _running(process, proxy) as running:
            yield running
    finally:
        _remove_squid_shm(instance)
        if user is not None:
            kept = tmp_path / instance
            kept.mkdir(exist_ok=True)
            for name in ("access.log", "cache.log", "squid.conf"):
                if (run_dir / name).exists():
                    shutil.copy(run_dir / name, kept / name)
            shutil.rmtree(run_dir, ignore_errors=True)
            if proxy is not None:
                proxy.log_path = kept / "access.log"


def _remove_squid_shm(instance: str) -> None:
    # squid leaves its shared-memory segments behind when it dies abnormally;
    # they would break a later instance with the same -n name.
    shm = Path("/dev/shm")
    if shm.is_dir():
        for segment in shm.glob(f"{instance}-*"):
            segment.unlink(missing_ok=True)


# --------------------------------------------------------------------------
# tinyproxy


@contextlib.contextmanager
def run_tinyproxy(
    *,
    tmp_path: Path,
    allow_ports: Sequence[int] | None = None,
    basic_auth: tuple[str, str] | None = None,
) -> Iterator[RunningProxy]:
    """Run tinyproxy in the foreground with its own configuration.

    ``allow_ports`` becomes ``ConnectPort`` lines (None: tinyproxy's default,
    CONNECT to any port; ``()``: CONNECT refused everywhere).  ``basic_auth``
    sets ``BasicAuth`` (realm "Tinyproxy").  Run as root it stays root (no
    ``User``/``Group`` lines), so ``tmp_path`` works as is.
    """
    if basic_auth is not None:
        _check_secret_free(basic_auth[0], "tinyproxy user", '"')
        _check_secret_free(basic_auth[1], "tinyproxy password", '"')
    tinyproxy = require_binary("tinyproxy")
    tmp_path.mkdir(parents=True, exist_ok=True)
    instance = f"tinyproxy-{next(_instance_counter)}"
    log_path = tmp_path / f"{instance}.log"

    def launch(port: int) -> tuple[_Process, Callable[[], str]]:
        lines = [
            f"Port {port}",
            "Listen 127.0.0.1",
            "Allow 127.0.0.1",
            "Timeout 60",
            "MaxClients 50",
            f'LogFile "{log_path}"',
            "LogLevel Info",
            f'PidFile "{tmp_path / f"{instance}.pid"}"',
        ]
        if allow_ports is not None:
            # Per tinyproxy.conf(5), "ConnectPort 0" disables CONNECT entirely.
            lines += [f"ConnectPort {int(p)}" for p in allow_ports] or ["ConnectPort 0"]
        if basic_auth is not None:
            lines.append(f"BasicAuth {basic_auth[0]} {basic_auth[1]}")
        config = tmp_path / f"{instance}.conf"
        config.write_text("\n".join(lines) + "\n")
        config.chmod(0o600)
        process = _spawn([tinyproxy, "-d", "-c", str(config)], tmp_path / f"{instance}.out")
        return process, lambda: _tail(process.output_path) + _tail(log_path)

    process, port = _start_with_retry(launch)
    proxy = RunningProxy(
        url=f"http://127.0.0.1:{port}",
        host="127.0.0.1",
        port=port,
        pid=process.pid,
        name="tinyproxy",
        log_path=log_path,
    )
    with _running(process, proxy) as running:
        yield running
