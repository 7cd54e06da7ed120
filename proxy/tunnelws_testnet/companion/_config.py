"""The companion proxy's configuration: one frozen dataclass of small parts."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path

from ._auth import Authenticator, AuthScheme, DigestAlgorithm
from ._log import LogSink
from ._policy import HostRules, Policy
from ._quirks import ReplyQuirks
from ._request import DEFAULT_MAX_HEAD_BYTES
from ._toxics import Toxics

__all__ = ["ProxyConfig"]


@dataclass(frozen=True)
class ProxyConfig:
    """Everything the companion proxy does. The defaults are a plain open
    HTTP proxy on ``127.0.0.1`` with an ephemeral port.

    Listening:
        host, port: where to listen (port 0 = pick a free one).
        ssl_context: serve TLS to clients (an ``https://`` proxy).
    Authentication (off when ``auth`` is None):
        auth: ``(user, password)`` clients must present.
        auth_scheme: ``"basic"``, ``"digest"`` (qop=auth), ``"ntlm"`` or
            ``"negotiate"`` (NTLM inside SPNEGO, and Kerberos with a keytab;
            both verified by pyspnego, user ``DOMAIN\\user`` or ``user``;
            connection-bound).
        keytab: for ``"negotiate"``: the service keys (``HTTP/<proxy host>``)
            Kerberos tickets are checked against, e.g.
            :attr:`tunnelws_testnet.kerberos.KerberosRealm.keytab`; any
            principal the realm vouches for is accepted and logged as the
            user. None: the keytab ``KRB5_KTNAME`` names, if any.
        realm: the challenge's realm.
        digest_algorithm: ``"MD5"`` or ``"SHA-256"``.
        close_after_407: close the connection after each 407 (clients must
            retry on a new connection).
    Policy:
        allow_ports: ports CONNECT and forwarding may reach (None = any).
        connect_ports: ports CONNECT alone may reach (None = no further
            limit): squid's ``SSL_ports``.
        refuse_connect: answer every CONNECT with 405 (a forward-only proxy).
        allow_hosts / deny_hosts: host names (suffix on label boundaries) and
            CIDRs; deny wins; an empty allow list allows everything.
        deny_status: status for refusals (403, or e.g. 502 to mimic a proxy
            that reports blocks as gateway errors).
    Forwarding:
        strip_upgrade: drop ``Upgrade``/``Connection: upgrade`` from forwarded
            requests (squid's behaviour; WebSocket handshakes then fail), and
            from the first request inside an intercepted TLS tunnel.
        transparent: accept origin-form requests and forward them to the
            ``Host`` header's origin (port 80 unless given), as a proxy that
            plain connections are redirected to.
    Faults:
        quirks: odd CONNECT replies (:class:`ReplyQuirks`).
        toxics: faults on the relayed bytes (:class:`Toxics`).
        buffer_responses: hold each forwarded response until this many bytes
            or its end arrived, then pass it on (a scanning proxy).
        request_time_limit: close a forwarded request's connection this many
            seconds after it started, finished or not.
        max_request_body: forwarded requests declaring a larger body get 413
            (a chunked body without a length gets 411).
        reset_responses: the fraction of forwarded responses reset (TCP RST)
            part way through their body; seeded by ``toxics.seed``.
    Interception:
        intercept: terminate TLS inside CONNECT tunnels with certificates
            from the proxy's own CA.
        ca_dir: where to write the CA certificate (None = a temporary directory
            removed when the proxy stops).
        onward_ssl_context: verification for the proxy's TLS to origins
            (None = the system trust store).
    Limits:
        head_timeout: seconds to receive a complete request head.
        max_head_bytes: larger request heads get 431.
        connect_timeout: seconds to connect to an origin (504 after).
    Logging:
        log: a callable taking one dict per request/tunnel, a path, or a text
            file (one JSON line each); None = no log.
    """

    host: str = "127.0.0.1"
    port: int = 0
    ssl_context: ssl.SSLContext | None = None
    auth: tuple[str, str] | None = field(default=None, repr=False)
    auth_scheme: AuthScheme = "basic"
    keytab: Path | None = None
    realm: str = "tunnelws"
    digest_algorithm: DigestAlgorithm = "MD5"
    close_after_407: bool = False
    allow_ports: frozenset[int] | None = None
    allow_hosts: tuple[str, ...] = ()
    deny_hosts: tuple[str, ...] = ()
    deny_status: int = 403
    strip_upgrade: bool = False
    transparent: bool = False
    connect_ports: frozenset[int] | None = None
    refuse_connect: bool = False
    quirks: ReplyQuirks = field(default_factory=ReplyQuirks)
    toxics: Toxics = field(default_factory=Toxics)
    buffer_responses: int | None = None
    request_time_limit: float | None = None
    max_request_body: int | None = None
    reset_responses: float = 0.0
    intercept: bool = False
    ca_dir: Path | None = None
    onward_ssl_context: ssl.SSLContext | None = None
    head_timeout: float = 10.0
    max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES
    connect_timeout: float = 10.0
    log: LogSink = None

    def __post_init__(self) -> None:
        if not 100 <= self.deny_status <= 599:
            raise ValueError(f"deny_status {self.deny_status} is not an HTTP status")
        for ports in (self.allow_ports, self.connect_ports):
            if ports is not None and any(not 0 < p < 65536 for p in ports):
                raise ValueError("allow_ports and connect_ports must be TCP ports")
        if not 0.0 <= self.reset_responses <= 1.0:
            raise ValueError("reset_responses is a fraction")
        for name in ("buffer_responses", "request_time_limit", "max_request_body"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive")
        self.authenticator()  # validates scheme, algorithm and realm early

    def authenticator(self) -> Authenticator | None:
        if self.auth is None:
            return None
        user, password = self.auth
        return Authenticator(
            user,
            password,
            scheme=self.auth_scheme,
            realm=self.realm,
            digest_algorithm=self.digest_algorithm,
            keytab=self.keytab,
        )

    def policy(self) -> Policy:
        return Policy(
            allow_ports=self.allow_ports,
            allow_hosts=HostRules.parse(self.allow_hosts),
            deny_hosts=HostRules.parse(self.deny_hosts),
            deny_status=self.deny_status,
            connect_ports=self.connect_ports,
        )
