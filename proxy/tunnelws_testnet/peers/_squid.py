"""squid (Debian) with a private configuration, one builder for every use.

squid's quirks, kept here once: ``-N`` (no daemon: the PID started is the
one serving), a distinct ``-n NAME`` per instance (its shared-memory
segments are named after it and must not collide), ``pid_filename none``,
``shutdown_lifetime 1 seconds`` and SIGINT to stop (its "shut down now",
skipping that wait), logs to files, ``pinger_enable off``. Started as root
it drops to the ``proxy`` user, which cannot enter a 0700 directory of
root's: its files then live in a directory of that user's under the system
temp dir and are copied back after it stopped. It logs a CONNECT only when
the tunnel has closed.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ._kind import (
    Launch,
    PeerUnavailableError,
    ProxyRequest,
    check_config_safe,
    missing_binary,
    require_binary,
)

__all__ = [
    "BASIC_REALM",
    "DIGEST_REALM",
    "STOCK_SAFE_PORTS",
    "Squid",
    "parse_squid_log",
    "squid_config",
]

BASIC_REALM = "tunnelws-squid-basic"
DIGEST_REALM = "tunnelws-squid-digest"
#: squid's stock ``Safe_ports``: the only ports it sends any request to.
STOCK_SAFE_PORTS = ("80", "21", "443", "70", "210", "1025-65535", "280", "488", "591", "777")
HELPERS = Path("/usr/lib/squid")

_instances = itertools.count(1)


def squid_config(
    *,
    host: str,
    port: int,
    run_dir: Path,
    allow_ports: Sequence[int] | None = (443,),
    safe_ports: Sequence[str] | None = None,
    clients: str = "localhost",
    basic_file: Path | None = None,
    digest_file: Path | None = None,
    negotiate_keytab: Path | None = None,
    effective_user: str | None = None,
) -> str:
    """squid.conf for one instance listening on ``host:port``, files in ``run_dir``.

    allow_ports: the CONNECT port policy: squid's stock ``SSL_ports`` is
        ``(443,)``; None allows CONNECT to any port, ``()`` refuses every CONNECT.
        Checked before authentication, as in the stock config (a forbidden
        port gets 403 without a 407 first).
    safe_ports: the only ports (or ranges, ``"1025-65535"``) any request,
        CONNECT included, may go to, as the stock ``Safe_ports``
        (:data:`STOCK_SAFE_PORTS` is the stock list); None: no such rule.
    clients: who may use it: ``"localhost"`` (squid's predefined ACL,
        127.0.0.1 and ::1) or a source CIDR such as ``"10.77.1.0/24"``.
    basic_file, digest_file: demand credentials: an htpasswd file for
        ``basic_ncsa_auth`` (realm :data:`BASIC_REALM`) and a ``user:password``
        file for ``digest_file_auth`` (realm :data:`DIGEST_REALM`); with both,
        Basic is offered first.
    negotiate_keytab: demand Negotiate (Kerberos), checked by
        ``negotiate_kerberos_auth`` against this keytab (any ``HTTP/<host>`` key).
    effective_user: the user squid drops to when started as root.
    """
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [
        f"http_port {listen}",
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
    if basic_file is not None:
        lines += [
            f"auth_param basic program {HELPERS}/basic_ncsa_auth {basic_file}",
            "auth_param basic children 2",
            f"auth_param basic realm {BASIC_REALM}",
        ]
    if digest_file is not None:
        lines += [
            f"auth_param digest program {HELPERS}/digest_file_auth {digest_file}",
            "auth_param digest children 2",
            f"auth_param digest realm {DIGEST_REALM}",
        ]
    if negotiate_keytab is not None:
        # No replay cache: nothing for the helper to keep writable.
        lines += [
            f"auth_param negotiate program {HELPERS}/negotiate_kerberos_auth "
            f"-k {negotiate_keytab} -s GSS_C_NO_NAME -t none",
            "auth_param negotiate children 2",
            "auth_param negotiate keep_alive on",
        ]
    lines.append("acl CONNECT method CONNECT")
    if safe_ports is not None:
        lines.append("acl Safe_ports port " + " ".join(safe_ports))
        lines.append("http_access deny !Safe_ports")
    if allow_ports is not None:
        if allow_ports:
            lines.append("acl SSL_ports port " + " ".join(str(int(p)) for p in allow_ports))
            lines.append("http_access deny CONNECT !SSL_ports")
        else:
            lines.append("http_access deny CONNECT")
    if basic_file is not None or digest_file is not None or negotiate_keytab is not None:
        lines += ["acl authenticated proxy_auth REQUIRED", "http_access deny !authenticated"]
    if clients == "localhost":
        lines.append("http_access allow localhost")
    else:
        lines += [f"acl tunnelws_clients src {clients}", "http_access allow tunnelws_clients"]
    lines.append("http_access deny all")
    return "\n".join(lines) + "\n"


def parse_squid_log(text: str) -> list[ProxyRequest]:
    """Requests from squid's native access.log format."""
    requests = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 7:
            continue
        code, _, status = fields[3].partition("/")
        requests.append(
            ProxyRequest(
                method=fields[5],
                target=fields[6],
                status=int(status) if status.isdigit() else None,
                event=code,
            )
        )
    return requests


def _squid_user() -> tuple[str, int, int] | None:
    """Name, uid and gid of the user squid drops to when started as root
    (None when not root)."""
    import pwd  # POSIX only; the in-process networks import this package anywhere

    if os.geteuid() != 0:
        return None
    for name in ("proxy", "squid", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return entry.pw_name, entry.pw_uid, entry.pw_gid
    raise PeerUnavailableError("no unprivileged user (proxy/squid/nobody) for squid to run as")


def _apr1_hash(password: str) -> str:
    # crypt() is gone from Python 3.13; basic_ncsa_auth understands Apache's
    # $apr1$ MD5 format, which openssl produces. -stdin keeps the password
    # out of the process list.
    openssl = require_binary("openssl", None)
    result = subprocess.run(
        [openssl, "passwd", "-apr1", "-stdin"],
        input=password + "\n",
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    return result.stdout.strip()


def _remove_shm(instance: str) -> None:
    # squid leaves its shared-memory segments behind when it dies abnormally;
    # they would break a later instance with the same -n name.
    shm = Path("/dev/shm")
    if shm.is_dir():
        for segment in shm.glob(f"{instance}-*"):
            segment.unlink(missing_ok=True)


@dataclass(frozen=True)
class Squid:
    """squid configured by :func:`squid_config` (see there for the options).

    The defaults are squid's stock CONNECT policy (443 only), for clients on
    loopback, no authentication. The instance name is
    ``twsquid<our pid>n<count>``.
    """

    allow_ports: Sequence[int] | None = (443,)
    safe_ports: Sequence[str] | None = None
    clients: str = "localhost"
    basic_auth: tuple[str, str] | None = None
    digest_auth: tuple[str, str] | None = None
    negotiate_keytab: Path | None = None
    binary: str | None = None

    def __post_init__(self) -> None:
        if self.basic_auth is not None:
            check_config_safe(self.basic_auth[0], "squid basic user", ":")
        if self.digest_auth is not None:
            check_config_safe(self.digest_auth[0], "squid digest user", ":")
            check_config_safe(self.digest_auth[1], "squid digest password", "")

    @property
    def name(self) -> str:
        return "squid"

    def missing(self) -> str | None:
        reason = missing_binary("squid", self.binary)
        if reason is None and self.basic_auth is not None:
            reason = missing_binary("openssl", None)
        return reason

    def launch(self, directory: Path, host: str, port: int) -> Launch:
        binary = require_binary("squid", self.binary)
        instance = f"twsquid{os.getpid()}n{next(_instances)}"
        user = _squid_user()
        if user is None:
            run_dir = directory / instance
            run_dir.mkdir()
        else:
            run_dir = Path(tempfile.mkdtemp(prefix=f"{instance}-"))
            os.chown(run_dir, user[1], user[2])

        def private_file(name: str, content: str) -> Path:
            path = run_dir / name
            path.write_text(content)
            path.chmod(0o600)
            if user is not None:
                os.chown(path, user[1], user[2])
            return path

        basic_file = digest_file = None
        if self.basic_auth is not None:
            user_name, password = self.basic_auth
            basic_file = private_file("basic.htpasswd", f"{user_name}:{_apr1_hash(password)}\n")
        if self.digest_auth is not None:
            # digest_file_auth without -c reads plain "user:password" lines.
            digest_file = private_file("digest.passwd", "{}:{}\n".format(*self.digest_auth))
        keytab = None
        if self.negotiate_keytab is not None:
            keytab = private_file("http.keytab", "")  # a copy the proxy user may read
            shutil.copy(self.negotiate_keytab, keytab)
        config = private_file(
            "squid.conf",
            squid_config(
                host=host,
                port=port,
                run_dir=run_dir,
                allow_ports=self.allow_ports,
                safe_ports=self.safe_ports,
                clients=self.clients,
                basic_file=basic_file,
                digest_file=digest_file,
                negotiate_keytab=keytab,
                effective_user=None if user is None else user[0],
            ),
        )
        kept = directory / instance

        def finish() -> None:
            _remove_shm(instance)
            if user is not None:
                kept.mkdir(exist_ok=True)
                for name in ("access.log", "cache.log", "squid.conf"):
                    if (run_dir / name).exists():
                        shutil.copy(run_dir / name, kept / name)
                shutil.rmtree(run_dir, ignore_errors=True)

        return Launch(
            name=self.name,
            argv=[binary, "-N", "-f", str(config), "-n", instance],
            host=host,
            port=port,
            scheme="http",
            output=directory / f"{instance}.out",
            log=run_dir / "access.log",
            parse=parse_squid_log,
            stop_signal=signal.SIGINT,
            log_delay=0.6,
            finish=finish,
            final_log=kept / "access.log",
        )
