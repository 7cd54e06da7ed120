"""From observations to a cause and a remedy: the knowledge in ``check``.

Pure: each function takes what a probe saw (plain data) and returns a
:class:`Diagnosis`, or ``None`` when the observation is healthy. No I/O, so
every rule is table-tested.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .._auth import SUPPORTED_SCHEMES
from ._report import Diagnosis

__all__ = [
    "ConnectAttempt",
    "ConnectObservation",
    "EchoObservation",
    "HeaderChanges",
    "IdleObservation",
    "SSEObservation",
    "TCPObservation",
    "TLSObservation",
    "UpgradeObservation",
    "diagnose_connect",
    "diagnose_echo",
    "diagnose_idle",
    "diagnose_resolution",
    "diagnose_route",
    "diagnose_sse",
    "diagnose_tcp",
    "diagnose_tls",
    "diagnose_upgrade",
]

HUGE_REPLY_BYTES = 64 * 1024
_TLS_RECORD = b"\x16\x03"
_SOCKS5_REPLY = b"\x05"


# -- route and name resolution -------------------------------------------------


def diagnose_route(message: str, source: str | None) -> Diagnosis:
    """The proxy configuration could not be used."""
    where = f" (from {source})" if source else ""
    return Diagnosis(
        "config",
        "bad-proxy-config",
        f"the proxy configuration is unusable{where}: {message}",
        "fix the proxy URL (http://[USER:PASSWORD@]HOST:PORT, special characters"
        " percent-encoded) or pass --proxy / --no-proxy",
    )


def diagnose_resolution(host: str, error: str, *, via_proxy: bool) -> Diagnosis:
    if via_proxy:
        return Diagnosis(
            "proxy-connect",
            "proxy-name-unresolved",
            f"the proxy's host name {host!r} does not resolve: {error}",
            "check the proxy URL in the environment or --proxy; use the proxy's IP address"
            " if this network's DNS does not know it",
        )
    return Diagnosis(
        "connect",
        "no-dns",
        f"{host!r} does not resolve here: {error}",
        "this network probably offers no DNS for outside names: go through the proxy"
        " (set https_proxy / http_proxy or pass --proxy), which resolves names itself",
    )


# -- TCP ------------------------------------------------------------------------


@dataclass(frozen=True)
class TCPObservation:
    """``outcome``: ``"refused"``, ``"unreachable"``, ``"silent"`` or ``"error"``."""

    outcome: str
    authority: str
    via_proxy: bool
    detail: str = ""
    timeout: float = 0.0


def diagnose_tcp(obs: TCPObservation) -> Diagnosis:
    peer = f"the proxy {obs.authority}" if obs.via_proxy else obs.authority
    category = "proxy-connect" if obs.via_proxy else "connect"
    if obs.outcome == "silent":
        remedy = (
            "check the proxy's host and port; a firewall may drop traffic to it"
            if obs.via_proxy
            else "a firewall drops direct traffic: use the proxy this network offers"
            " (https_proxy / --proxy)"
        )
        return Diagnosis(
            "timeout",
            "tcp-silent",
            f"no answer from {peer} within {obs.timeout:g} s: packets are silently dropped",
            remedy,
        )
    if obs.outcome == "refused":
        remedy = (
            "check the proxy's port (3128 and 8080 are usual) and that the proxy is running"
            if obs.via_proxy
            else "nothing listens there, or a firewall rejects direct connections:"
            " check the URL's port, or go through the proxy (https_proxy / --proxy)"
        )
        return Diagnosis(
            category, "tcp-refused", f"{peer} refused the connection ({obs.detail})", remedy
        )
    if obs.outcome == "unreachable":
        return Diagnosis(
            category,
            "no-route",
            f"no route to {peer} ({obs.detail})",
            "this host has no route there: direct egress is closed, use the proxy"
            if not obs.via_proxy
            else "check the proxy address and this host's network configuration",
        )
    return Diagnosis(
        category, "tcp-error", f"cannot connect to {peer}: {obs.detail}", "check the address"
    )


# -- CONNECT --------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectAttempt:
    """One CONNECT request and the proxy's reply."""

    status: int
    reason: str
    offered_schemes: tuple[str, ...] = ()
    credentials_scheme: str | None = None  # the Proxy-Authorization scheme sent, if any
    closed_after: bool = False  # the proxy would not take another request on the connection


@dataclass(frozen=True)
class ConnectObservation:
    """Everything seen while negotiating the tunnel.

    ``auth_error`` is the authenticator's explanation when it gave up on a
    407; ``protocol_error`` the parser's when the reply was not valid HTTP;
    ``reply_prefix`` the first bytes received; ``port_443_status`` the status
    a second CONNECT to the same host on port 443 got (``None``: not tried or
    no answer), which separates port policies from host policies.
    """

    authority: str
    port: int
    attempts: tuple[ConnectAttempt, ...] = ()
    had_credentials: bool = False
    auth_error: str | None = None
    protocol_error: str | None = None
    reply_prefix: bytes = b""
    received_bytes: int = 0
    timed_out: bool = False
    timeout: float = 0.0
    port_443_status: int | None = None
    body_excerpt: str = ""


def diagnose_connect(obs: ConnectObservation) -> Diagnosis | None:
    if obs.timed_out:
        return Diagnosis(
            "timeout",
            "proxy-silent",
            f"the proxy accepted the connection but did not answer CONNECT {obs.authority}"
            f" within {obs.timeout:g} s",
            "the proxy may be overloaded, or this is not an HTTP proxy port (a SOCKS or"
            " TLS port stays silent too): check the proxy URL's scheme and port",
        )
    if obs.protocol_error is not None:
        return _diagnose_protocol(obs)
    if not obs.attempts:
        raise ValueError("a ConnectObservation needs attempts or an error")
    last = obs.attempts[-1]
    if 200 <= last.status < 300:
        return None
    if last.status == 407:
        return _diagnose_auth(obs, last)
    return _diagnose_refusal(obs, last)


def _diagnose_protocol(obs: ConnectObservation) -> Diagnosis:
    error = obs.protocol_error or ""
    if obs.received_bytes == 0:
        return Diagnosis(
            "proxy-protocol",
            "proxy-closed",
            f"the proxy closed the connection without answering CONNECT {obs.authority}",
            "the proxy may drop CONNECT silently for this destination or this client;"
            " try with -v, and ask the proxy's administrators what it logged",
        )
    if obs.received_bytes >= HUGE_REPLY_BYTES and obs.reply_prefix.startswith(b"HTTP/"):
        return Diagnosis(
            "proxy-protocol",
            "huge-headers",
            f"the proxy's reply head is larger than {HUGE_REPLY_BYTES // 1024} KiB ({error})",
            "a misbehaving proxy or something impersonating one: report it to the"
            " network's administrators",
        )
    if obs.reply_prefix.startswith(b"HTTP/"):
        return Diagnosis(
            "proxy-protocol",
            "malformed-reply",
            f"the proxy's reply to CONNECT is not valid HTTP: {error}",
            "a broken proxy: report it, or try another proxy",
        )
    hint = "check that the proxy URL points at an HTTP proxy"
    if obs.reply_prefix.startswith(_TLS_RECORD):
        hint = "this port speaks TLS: use an https:// proxy URL"
    elif obs.reply_prefix.startswith(_SOCKS5_REPLY):
        hint = "this looks like a SOCKS proxy: use a socks5h:// proxy URL"
    return Diagnosis(
        "proxy-protocol",
        "not-http",
        f"the proxy answered CONNECT with bytes that are not HTTP ({obs.reply_prefix[:16]!r})",
        hint,
    )


def _diagnose_auth(obs: ConnectObservation, last: ConnectAttempt) -> Diagnosis:
    offered = ", ".join(last.offered_schemes) or "no scheme"
    supported = {scheme.lower() for scheme in SUPPORTED_SCHEMES}
    if last.offered_schemes and not supported & {s.lower() for s in last.offered_schemes}:
        return Diagnosis(
            "proxy-auth",
            "auth-unsupported",
            f"the proxy requires authentication with {offered}, which tunnelws does not speak",
            f"ask for one of {', '.join(SUPPORTED_SCHEMES)} to be enabled: tunnelws answers"
            " those, and `tunnelws local-proxy` answers them for any other program too"
            " (docs/local-proxy.md)",
        )
    if not obs.had_credentials:
        return Diagnosis(
            "proxy-auth",
            "auth-missing",
            f"the proxy requires authentication (407; offers {offered}) and no credentials"
            " were given",
            "pass --proxy-user USER:PASSWORD or put them in the proxy URL"
            " (http://USER:PASSWORD@HOST:PORT, special characters percent-encoded)",
        )
    if (
        last.closed_after
        and last.credentials_scheme is not None
        and last.credentials_scheme.lower() in ("ntlm", "negotiate")
        and obs.auth_error is not None
    ):
        # The challenge is only valid on the connection the proxy just closed.
        return Diagnosis(
            "proxy-auth",
            "auth-handshake-closed",
            f"the proxy closed the connection in the middle of the {last.credentials_scheme}"
            " handshake, which authenticates one connection",
            "the proxy must keep the connection open between its 407 and the answer: check"
            " its keep-alive settings, or use Basic/Digest (--proxy-auth-scheme)",
        )
    sent = next((a.credentials_scheme for a in reversed(obs.attempts) if a.credentials_scheme), "")
    return Diagnosis(
        "proxy-auth",
        "auth-rejected",
        f"the proxy rejected the {sent or 'given'} credentials (407 again; offers {offered})",
        "check the user name and password (special characters in a proxy URL must be"
        " percent-encoded); the account may also be locked or lack proxy access",
    )


def _diagnose_refusal(obs: ConnectObservation, last: ConnectAttempt) -> Diagnosis:
    status = f"{last.status} {last.reason}".strip()
    port_policy = (
        obs.port != 443
        and last.status == 403
        and obs.port_443_status is not None
        and obs.port_443_status != 403
    )
    if port_policy:
        return Diagnosis(
            "proxy-refused",
            "port-policy",
            f"the proxy allows CONNECT only to 443: port {obs.port} got {status}, while"
            f" port 443 on the same host got {obs.port_443_status}",
            "use wss:// on port 443 (the server must listen there); ws:// on other"
            " ports cannot pass this proxy",
        )
    if last.status == 403 and obs.port != 443 and obs.port_443_status is None:
        return Diagnosis(
            "proxy-refused",
            "refused-port-or-host",
            f"the proxy refused CONNECT {obs.authority}: {status}",
            "many proxies allow CONNECT only to port 443: use wss:// on port 443;"
            " otherwise ask for the host to be allowed",
        )
    if last.status in (403, 451) or (last.status == 403 and obs.port == 443):
        return Diagnosis(
            "proxy-refused",
            "host-denied",
            f"the proxy refuses this destination: CONNECT {obs.authority} got {status}"
            + (f" ({obs.body_excerpt})" if obs.body_excerpt else ""),
            "the proxy's policy blocks this host: ask its administrators to allow it,"
            " or use a server the policy permits",
        )
    if last.status in (502, 503):
        return Diagnosis(
            "proxy-refused",
            "origin-unreachable-from-proxy",
            f"the proxy could not reach {obs.authority}: {status}"
            + (f" ({obs.body_excerpt})" if obs.body_excerpt else ""),
            "check the host name and port (the proxy resolves the name); the server may"
            " be down or firewalled from the proxy",
        )
    if last.status == 504:
        return Diagnosis(
            "proxy-refused",
            "origin-timeout-from-proxy",
            f"the proxy timed out connecting to {obs.authority}: {status}",
            "the server does not answer the proxy: check the host, the port and that it is up",
        )
    if last.status == 405 or last.status == 501:
        return Diagnosis(
            "proxy-refused",
            "connect-not-supported",
            f"the proxy does not support CONNECT: {status}",
            "use a proxy that supports CONNECT (every forward proxy for HTTPS does)",
        )
    return Diagnosis(
        "proxy-refused",
        "refused",
        f"the proxy refused CONNECT {obs.authority}: {status}",
        "read the proxy's error page with -v; ask its administrators",
    )


# -- TLS ------------------------------------------------------------------------


@dataclass(frozen=True)
class TLSObservation:
    """The origin's TLS as seen through the route.

    ``verify_error`` is None when the certificate verified. ``issuer`` /
    ``subject`` are those of the certificate received on the route;
    ``direct_issuer`` that of the certificate received on a direct connection
    (None when not compared or not reachable); ``proxy_issuer`` that of an
    https:// proxy's own certificate.
    """

    host: str
    via_proxy: bool
    verify_error: str | None = None
    handshake_error: str | None = None
    subject: str | None = None
    issuer: str | None = None
    direct_issuer: str | None = None
    proxy_issuer: str | None = None
    timed_out: bool = False
    timeout: float = 0.0


_UNTRUSTED_ISSUER_MARKERS = ("unable to get local issuer", "self-signed", "self signed")


def diagnose_tls(obs: TLSObservation) -> Diagnosis | None:
    if obs.timed_out:
        return Diagnosis(
            "timeout",
            "tls-silent",
            f"the TLS handshake with {obs.host} did not finish within {obs.timeout:g} s",
            "something on the path holds TLS back (a filtering proxy?): try with -v",
        )
    intercepted = (
        obs.via_proxy
        and obs.issuer is not None
        and (
            (obs.direct_issuer is not None and obs.direct_issuer != obs.issuer)
            or (obs.proxy_issuer is not None and obs.proxy_issuer == obs.issuer)
        )
    )
    issuer_text = f"issuer {obs.issuer!r}" if obs.issuer else "an unknown issuer"
    if obs.verify_error is not None:
        untrusted_issuer = any(m in obs.verify_error for m in _UNTRUSTED_ISSUER_MARKERS)
        if intercepted or (obs.via_proxy and untrusted_issuer and obs.direct_issuer is None):
            sure = "intercepts" if intercepted else "probably intercepts"
            direct = (
                f"; reached directly, the server's certificate comes from {obs.direct_issuer!r}"
                if intercepted and obs.direct_issuer is not None
                else ""
            )
            return Diagnosis(
                "tls",
                "tls-intercepted",
                f"your proxy {sure} TLS: the certificate for {obs.host} comes from"
                f" {issuer_text}, which this client does not trust{direct}",
                "your proxy intercepts TLS; pass its CA with --cacert or install it in the"
                " system store (ask IT for the corporate root certificate)",
            )
        if "mismatch" in obs.verify_error.lower():  # "Hostname mismatch", "IP address mismatch"
            return Diagnosis(
                "tls",
                "tls-name-mismatch",
                f"the certificate is not valid for {obs.host}: {obs.verify_error}",
                "use the host name the certificate was issued for",
            )
        return Diagnosis(
            "tls",
            "tls-untrusted",
            f"the certificate of {obs.host} ({issuer_text}) could not be verified:"
            f" {obs.verify_error}",
            "if the server uses a private CA, pass it with --cacert FILE",
        )
    if obs.handshake_error is not None:
        return Diagnosis(
            "tls",
            "tls-failed",
            f"the TLS handshake with {obs.host} failed: {obs.handshake_error}",
            "check that the URL's port speaks TLS (wss://), or use ws:// for a plain port",
        )
    if intercepted:
        return Diagnosis(
            "tls",
            "tls-intercepted-trusted",
            f"the proxy intercepts TLS with a CA this client trusts ({issuer_text}; reached"
            f" directly the issuer is {obs.direct_issuer or obs.proxy_issuer!r})",
            "nothing to fix for WebSocket; the proxy can read the traffic, so treat"
            " secrets accordingly",
            severity="warning",
        )
    return None


# -- WebSocket upgrade ----------------------------------------------------------


@dataclass(frozen=True)
class HeaderChanges:
    """Request headers the origin did not receive, and ones it got extra."""

    stripped: tuple[str, ...] = ()
    added: tuple[str, ...] = ()


@dataclass(frozen=True)
class UpgradeObservation:
    """The reply to the upgrade request. ``status`` None: no reply at all."""

    url: str
    secure: bool
    via_proxy: bool
    status: int | None = None
    reason: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    accept_ok: bool | None = None
    closed: bool = False
    error: str | None = None
    timed_out: bool = False
    timeout: float = 0.0
    changes: HeaderChanges | None = None

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.headers if k.lower() == wanted), None)


def diagnose_upgrade(obs: UpgradeObservation) -> Diagnosis | None:
    if obs.timed_out:
        return Diagnosis(
            "timeout",
            "upgrade-silent",
            f"no answer to the WebSocket upgrade within {obs.timeout:g} s",
            "something holds the request back (a buffering proxy, or a server that is"
            " not HTTP): try with -v",
        )
    if obs.status is None:
        return Diagnosis(
            "handshake",
            "upgrade-closed",
            "the connection was closed during the WebSocket upgrade"
            + (f" ({obs.error})" if obs.error else ""),
            "a filter on the path may drop WebSocket upgrades: try wss://, which it cannot inspect"
            if not obs.secure
            else "check the URL; the server may not speak HTTP",
        )
    stripped = obs.changes is not None and any(
        name.lower() in ("upgrade", "connection") for name in obs.changes.stripped
    )
    via = obs.header("Via")
    if obs.status == 101:
        if obs.accept_ok is False:
            return Diagnosis(
                "handshake",
                "bad-accept",
                "the 101 reply carries a wrong Sec-WebSocket-Accept: something on the way"
                " rewrote the handshake",
                "use wss:// so that nothing between client and server can alter it",
            )
        if obs.changes is not None and obs.changes.stripped:
            return Diagnosis(
                "handshake",
                "headers-stripped",
                "the upgrade worked, but the origin did not receive these request headers: "
                + ", ".join(obs.changes.stripped),
                "a proxy rewrites requests on the way: use wss:// if they matter",
                severity="warning",
            )
        return None
    if stripped or (obs.status in (200, 400, 426) and not obs.secure):
        who = f"a proxy ({via})" if via else "a transparent proxy"
        evidence = (
            "the origin received the request without Upgrade/Connection"
            if stripped
            else f"the server answered {obs.status} {obs.reason} instead of 101"
        )
        return Diagnosis(
            "handshake",
            "upgrade-stripped",
            f"{who} in the path removed the WebSocket Upgrade header: {evidence}",
            "use wss:// (port 443): a transparent proxy cannot see into TLS; with an"
            " explicit proxy, configure it (https_proxy / --proxy) so a CONNECT tunnel is used",
        )
    if obs.status in (401, 403):
        return Diagnosis(
            "handshake",
            "upgrade-forbidden",
            f"the server refused the WebSocket: {obs.status} {obs.reason}",
            "the server wants authentication or a permitted Origin: check its documentation",
        )
    if obs.status == 404:
        return Diagnosis(
            "handshake",
            "no-such-path",
            f"no WebSocket at {obs.url}: 404 {obs.reason}",
            "check the URL's path",
        )
    return Diagnosis(
        "handshake",
        "upgrade-refused",
        f"the server answered {obs.status} {obs.reason} instead of 101 Switching Protocols",
        "check the URL; if the server is fine directly, something on the path interferes:"
        " try wss://",
    )


# -- messages -------------------------------------------------------------------


@dataclass(frozen=True)
class EchoObservation:
    """``failed_part`` names the exchange that failed (``"text"``, ``"binary"``,
    ``"1 MiB"``, ``"latency"``); ``lost`` says the connection ended (with
    ``how``: ``"closed"``/``"reset"``), otherwise the echo was wrong or late."""

    failed_part: str
    lost: bool = False
    how: str = ""
    bytes_before: int = 0
    timed_out: bool = False
    timeout: float = 0.0
    close_code: int | None = None


def diagnose_echo(obs: EchoObservation) -> Diagnosis:
    if obs.lost:
        if obs.close_code == 1009:
            return Diagnosis(
                "connection-lost",
                "message-too-big",
                f"the server closed with 1009 on the {obs.failed_part} message (too big)",
                "the server limits message size: send smaller messages",
            )
        return Diagnosis(
            "connection-lost",
            "tunnel-reset" if obs.how == "reset" else "tunnel-closed",
            f"the connection was {'reset' if obs.how == 'reset' else 'closed'} during the"
            f" {obs.failed_part} echo, after {obs.bytes_before} bytes had passed",
            "something on the path cuts connections (a proxy limit on tunnel bytes or"
            " time, or a flaky link): reconnect on loss, and ask what limits the proxy sets",
        )
    if obs.timed_out:
        return Diagnosis(
            "timeout",
            "echo-silent",
            f"the {obs.failed_part} echo did not come back within {obs.timeout:g} s",
            "the path stalls or is very slow (a bandwidth limit?); the server may not echo",
        )
    return Diagnosis(
        "handshake",
        "echo-altered",
        f"the {obs.failed_part} echo came back different from what was sent",
        "something rewrites WebSocket payloads (an inspecting proxy on ws://): use wss://",
    )


@dataclass(frozen=True)
class IdleObservation:
    """``idle``: seconds waited; ``died_after``: when the plain tunnel ended
    (None: it survived); with pings (``ping_interval`` set) whether it survived."""

    idle: float
    died_after: float | None = None
    ping_interval: float | None = None
    survived_with_pings: bool | None = None
    via_proxy: bool = True


def diagnose_idle(obs: IdleObservation) -> Diagnosis | None:
    if obs.died_after is None:
        return None
    died = max(1, round(obs.died_after))
    who = "the proxy drops idle tunnels" if obs.via_proxy else "the path drops idle connections"
    if obs.survived_with_pings:
        return Diagnosis(
            "connection-lost",
            "idle-timeout",
            f"{who} after ~{died} s; with a ping every"
            f" {obs.ping_interval:g} s the tunnel survived {obs.idle:g} s",
            f"set ping_interval below {died} (tunnelws connect --ping-interval"
            f" {obs.ping_interval:g}; open_websocket(..., ping_interval={obs.ping_interval:g}))",
        )
    return Diagnosis(
        "connection-lost",
        "tunnel-lifetime",
        f"the tunnel ended after ~{died} s, even with pings every {obs.ping_interval:g} s:"
        " the path limits how long a connection may live",
        "reconnect when the connection drops (the limit is per connection)",
    )


@dataclass(frozen=True)
class SSEObservation:
    """Arrival times (seconds since the request) of events sent ``interval`` apart."""

    interval: float
    arrivals: Sequence[float] = field(default_factory=tuple)


def diagnose_sse(obs: SSEObservation) -> Diagnosis | None:
    if len(obs.arrivals) < 2:
        return Diagnosis(
            "handshake",
            "sse-missing",
            f"only {len(obs.arrivals)} event(s) arrived",
            "a proxy may hold the stream back: use https:// so it cannot buffer it",
            severity="warning",
        )
    spread = obs.arrivals[-1] - obs.arrivals[0]
    expected = obs.interval * (len(obs.arrivals) - 1)
    if spread < expected / 2:
        return Diagnosis(
            "handshake",
            "sse-buffered",
            f"{len(obs.arrivals)} events sent {obs.interval:g} s apart arrived within"
            f" {spread:.2f} s: something on the path buffers the stream",
            "use https:// so no proxy can buffer it, or ask for text/event-stream to be"
            " excluded from buffering",
            severity="warning",
        )
    return None
