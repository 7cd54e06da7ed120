"""A real Kerberos realm for the test network: MIT ``krb5kdc`` as a child process.

Everything lives in one directory of its own: ``krb5.conf`` (for clients and
servers), ``kdc.conf``, the database, the service keytab and the KDC log, so
the machine's ``/etc/krb5.conf`` is never read and nothing outside the
directory changes. The KDC listens on its own port (loopback by default)::

    with KerberosRealm() as realm:           # created, started, ready
        ccache = realm.kinit("alice")         # "FILE:/tmp/.../ccache-alice"
        client_env = realm.client_env(ccache) # KRB5_CONFIG, KRB5CCNAME
        server_env = realm.server_env()       # KRB5_CONFIG, KRB5_KTNAME, ...

Kerberos names hosts, not addresses: a client reaching the proxy as
``http://localhost:PORT`` asks for ``HTTP/localhost@TUNNELWS.TEST``, so each
name in ``service_hosts`` gets an ``HTTP/<name>`` principal in the keytab and a
``[domain_realm]`` entry. ``krb5.conf`` turns off DNS canonicalisation and
reverse lookups, so the name the client typed is the name it asks for.

Passwords go to ``kdb5_util``, ``kadmin.local`` and ``kinit`` on stdin, never
on a command line (``ps`` shows command lines). The KDC is stopped by its PID.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from .peers import listening

__all__ = ["DEFAULT_REALM", "KERBEROS_BINARIES", "KerberosError", "KerberosRealm"]

DEFAULT_REALM = "TUNNELWS.TEST"
#: The MIT tools the realm runs (Debian: krb5-kdc, krb5-admin-server, krb5-user).
KERBEROS_BINARIES = ("krb5kdc", "kdb5_util", "kadmin.local", "kinit")
_POLL = 0.02
_STOP_GRACE = 5.0


class KerberosError(RuntimeError):
    """The realm could not be set up, started or used (the message says why)."""


def find_binary(name: str) -> str | None:
    """The path of an MIT tool; the admin tools live in /usr/sbin, often off PATH."""
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )


class KerberosRealm:
    """One realm with its KDC. Use as a context manager or call
    :meth:`start` / :meth:`stop`.

    ``users`` maps user names to passwords (default: ``alice`` with a random
    password). ``host``/``port`` is where the KDC listens (port 0: a free one).
    ``kdc_prefix`` runs the KDC under another command, e.g.
    ``("ip", "netns", "exec", NS)`` to put it in a network namespace (then give
    a fixed ``port`` and that namespace's address as ``host``).
    """

    def __init__(
        self,
        directory: Path | None = None,
        *,
        realm: str = DEFAULT_REALM,
        host: str = "127.0.0.1",
        port: int = 0,
        service_hosts: Sequence[str] = ("localhost",),
        users: Mapping[str, str] | None = None,
        kdc_prefix: Sequence[str] = (),
        timeout: float = 10.0,
    ) -> None:
        if not realm or realm != realm.upper() or any(c in realm for c in " \n{}="):
            raise ValueError(f"realm {realm!r} must be an upper-case name")
        self.realm = realm
        self.host = host
        self.port = port
        self.service_hosts = tuple(service_hosts)
        self._users = dict(users) if users is not None else {"alice": secrets.token_urlsafe(16)}
        for name, password in self._users.items():
            if not name or any(c.isspace() or c in "@/" for c in name) or "\n" in password:
                # Never echo the password: the message may end up in a log.
                raise ValueError(f"unusable Kerberos user name {name!r} or password")
        self._kdc_prefix = tuple(kdc_prefix)
        self.timeout = timeout
        self._own_directory = directory is None
        self.directory = (
            directory if directory is not None else Path(tempfile.mkdtemp(prefix="tunnelws-krb5-"))
        )
        if self._own_directory:
            # Services that drop privileges (squid's helpers) must read krb5.conf;
            # the secrets in here (database, keytab, caches) are 0600 files.
            self.directory.chmod(0o755)
        self.krb5_conf = self.directory / "krb5.conf"
        self.kdc_conf = self.directory / "kdc.conf"
        self.keytab = self.directory / "http.keytab"
        self.log_path = self.directory / "kdc.log"
        self._kdc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.pid is not None else "stopped"
        return f"KerberosRealm({self.realm!r}, kdc={self.host}:{self.port}, {state})"

    @property
    def users(self) -> tuple[str, ...]:
        return tuple(self._users)

    @property
    def pid(self) -> int | None:
        """The KDC's PID while it runs."""
        return self._kdc.pid if self._kdc is not None and self._kdc.poll() is None else None

    def principal(self, user: str) -> str:
        return f"{user}@{self.realm}"

    def service_principal(self, host: str) -> str:
        """The principal a client asks a ticket for to reach a proxy at ``host``."""
        return f"HTTP/{host}@{self.realm}"

    # -- environments ------------------------------------------------------

    def client_env(self, ccache: str | None = None) -> dict[str, str]:
        """Variables for a Kerberos client: this realm's ``krb5.conf`` and the
        ticket cache ``ccache`` (None: an empty one, so no ticket the machine
        happens to have leaks into a test)."""
        return {
            "KRB5_CONFIG": str(self.krb5_conf),
            "KRB5CCNAME": ccache or f"FILE:{self.directory / 'ccache-empty'}",
        }

    def server_env(self) -> dict[str, str]:
        """Variables for an acceptor (the proxy): ``krb5.conf``, the keytab
        with every ``HTTP/<host>`` key, and a replay cache in the directory."""
        return {
            "KRB5_CONFIG": str(self.krb5_conf),
            "KRB5_KTNAME": f"FILE:{self.keytab}",
            "KRB5RCACHEDIR": str(self.directory),
        }

    def _admin_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KRB5")}
        env.update(KRB5_CONFIG=str(self.krb5_conf), KRB5_KDC_PROFILE=str(self.kdc_conf))
        return env

    # -- life cycle --------------------------------------------------------

    def __enter__(self) -> KerberosRealm:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Create the database, principals and keytab, start the KDC and wait
        until it listens. Raises :class:`KerberosError` (everything started
        is stopped first)."""
        if self._kdc is not None:
            raise KerberosError("the realm is already started")
        try:
            tools = {name: find_binary(name) for name in KERBEROS_BINARIES}
            missing = [name for name, path in tools.items() if path is None]
            if missing:
                raise KerberosError(
                    f"MIT Kerberos tools missing: {', '.join(missing)} "
                    "(Debian: krb5-kdc krb5-admin-server krb5-user)"
                )
            fixed_port = self.port != 0
            for attempt in (1, 2):  # a free port may be taken before the KDC binds it
                if not fixed_port:
                    self.port = _free_port(self.host)
                self._write_configs()
                if attempt == 1:
                    self._create_database(tools)
                try:
                    self._start_kdc(tools)
                    return
                except KerberosError:
                    if fixed_port or attempt == 2:
                        raise
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the KDC by its PID and remove the directory if it was ours."""
        kdc, self._kdc = self._kdc, None
        if kdc is not None and kdc.poll() is None:
            kdc.send_signal(signal.SIGTERM)
            try:
                kdc.wait(timeout=_STOP_GRACE)
            except subprocess.TimeoutExpired:
                kdc.kill()
                kdc.wait(timeout=_STOP_GRACE)
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def kinit(
        self, user: str = "alice", ccache: str | None = None, *, prefix: Sequence[str] = ()
    ) -> str:
        """Get ``user``'s ticket-granting ticket into ``ccache`` (default
        ``FILE:<directory>/ccache-<user>``) and return the cache name.

        The password goes on stdin. ``prefix`` runs ``kinit`` under another
        command (a network namespace the client lives in)."""
        if user not in self._users:
            raise KerberosError(f"no user {user!r} in realm {self.realm}")
        kinit = find_binary("kinit")
        if kinit is None:
            raise KerberosError("kinit is missing (Debian: krb5-user)")
        ccache = ccache or f"FILE:{self.directory / f'ccache-{user}'}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("KRB5")}
        env.update(self.client_env(ccache))
        self._run(
            [*prefix, kinit, "-c", ccache, self.principal(user)],
            self._users[user] + "\n",
            env,
            what=f"kinit {user}",
        )
        return ccache

    # -- steps ---------------------------------------------------------------

    def _write_configs(self) -> None:
        kdc = f"{self.host}:{self.port}"
        domain_realm = "".join(f"    {host} = {self.realm}\n" for host in self.service_hosts)
        self.krb5_conf.write_text(
            "[libdefaults]\n"
            f"    default_realm = {self.realm}\n"
            "    dns_lookup_kdc = false\n"
            "    dns_lookup_realm = false\n"
            # The name the client uses is the name it asks a ticket for.
            "    dns_canonicalize_hostname = false\n"
            "    rdns = false\n"
            "    forwardable = false\n"
            "[realms]\n"
            f"    {self.realm} = {{\n"
            f"        kdc = {kdc}\n"
            "    }\n"
            "[domain_realm]\n" + domain_realm,
            encoding="utf-8",
        )
        self.kdc_conf.write_text(
            "[kdcdefaults]\n"
            f"    kdc_listen = {kdc}\n"
            f"    kdc_tcp_listen = {kdc}\n"
            "[realms]\n"
            f"    {self.realm} = {{\n"
            f"        database_name = {self.directory / 'principal'}\n"
            f"        key_stash_file = {self.directory / 'stash'}\n"
            f"        acl_file = {self.directory / 'kadm5.acl'}\n"
            "        max_life = 10h\n"
            "    }\n"
            "[logging]\n"
            f"    kdc = FILE:{self.log_path}\n"
            f"    default = FILE:{self.log_path}\n",
            encoding="utf-8",
        )
        (self.directory / "kadm5.acl").touch()

    def _create_database(self, tools: Mapping[str, str | None]) -> None:
        master = secrets.token_urlsafe(24)
        env = self._admin_env()
        self._run(
            [str(tools["kdb5_util"]), "-r", self.realm, "create", "-s"],
            f"{master}\n{master}\n",
            env,
            what="kdb5_util create",
        )
        # kadmin.local reads commands, and the password prompts, from stdin.
        commands = []
        for user, password in self._users.items():
            commands += [f"addprinc {user}", password, password]
        services = [self.service_principal(host) for host in self.service_hosts]
        commands += [f"addprinc -randkey {service}" for service in services]
        commands += [f"ktadd -k {self.keytab} {service}" for service in services]
        commands.append("quit")
        self._run(
            [str(tools["kadmin.local"]), "-r", self.realm],
            "\n".join(commands) + "\n",
            env,
            what="kadmin.local",
        )
        if not self.keytab.exists():
            raise KerberosError(f"kadmin.local wrote no keytab:\n{self._log_tail()}")

    def _start_kdc(self, tools: Mapping[str, str | None]) -> None:
        output = self.directory / "kdc.out"
        with output.open("wb") as out:
            self._kdc = subprocess.Popen(
                [*self._kdc_prefix, str(tools["krb5kdc"]), "-n", "-r", self.realm],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self._admin_env(),
                start_new_session=True,  # a Ctrl-C for the tests does not race the teardown
            )
        deadline = time.monotonic() + self.timeout
        while not listening(self._kdc.pid, self.host, self.port):
            status = self._kdc.poll()
            if status is not None or time.monotonic() >= deadline:
                self._kill_kdc()
                what = f"exited with status {status}" if status is not None else "not listening"
                raise KerberosError(
                    f"krb5kdc {what} on {self.host}:{self.port} after start:\n"
                    f"{_tail(output)}{self._log_tail()}"
                )
            time.sleep(_POLL)

    def _kill_kdc(self) -> None:
        kdc, self._kdc = self._kdc, None
        if kdc is not None and kdc.poll() is None:
            kdc.kill()
            kdc.wait(timeout=_STOP_GRACE)

    def _run(self, argv: list[str], stdin: str, env: Mapping[str, str], *, what: str) -> None:
        try:
            result = subprocess.run(
                argv,
                input=stdin.encode(),
                capture_output=True,
                env=dict(env),
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise KerberosError(f"{what} did not finish in {self.timeout} s") from None
        # kadmin.local echoes its commands (never the password lines) on stdout.
        text = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
        if result.returncode != 0:
            raise KerberosError(f"{what} failed (status {result.returncode}):\n{text[-2000:]}")

    def _log_tail(self) -> str:
        return _tail(self.log_path)


def _free_port(host: str) -> int:
    """A port free for both TCP and UDP on ``host`` (the KDC serves both)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return port
    raise KerberosError(f"no free port on {host} for the KDC")


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""
