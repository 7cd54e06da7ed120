"""The scenario catalogue, as data: the one source of scenario ids and of
what a correct client does in each.

Every scenario is one small network: a client namespace, a router namespace
that is both the firewall and the proxy host, and an origin namespace. A
scenario says how the firewall treats the client's direct traffic, which proxy
runs (if any) and with which options, how the client is told about the proxy,
which URL it gets, and what a correct client does. Adding a scenario is adding
one :class:`Scenario` entry to :data:`CATALOGUE`.

Other tables keyed by scenario (the in-process networks of
:mod:`tunnelws_testnet.inprocess`, the test suite's ``check`` table, the
compatibility matrix) use these ids and take the expectations from here; a
test fails when one names an id missing here. The table in docs/harness.md is
generated from this data (``python -m tunnelws_testnet.harness._doc``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ..kerberos import KERBEROS_BINARIES

__all__ = [
    "BY_ID",
    "CATALOGUE",
    "CLIENT_ADDRESS",
    "CLIENT_ADDRESS6",
    "CLIENT_NETWORK",
    "CORP_DOMAIN",
    "DEAD_PROXY_PORT",
    "KERBEROS_PRINCIPAL",
    "ORIGIN_ADDRESS",
    "ORIGIN_ADDRESS6",
    "ORIGIN_NAME",
    "PAC_PORT",
    "PROXY_ADDRESS",
    "PROXY_ADDRESS6",
    "PROXY_ENV_NAMES",
    "PROXY_NAME",
    "PROXY_PORT",
    "ROUTER_ORIGIN_SIDE",
    "ROUTER_ORIGIN_SIDE6",
    "SOCKS_PORT",
    "TRANSPARENT_PORT",
    "Extension",
    "Firewall",
    "PacDelivery",
    "ProxyKind",
    "ProxySpec",
    "Scenario",
    "select",
]

# Addresses inside the namespaces of one scenario. Every scenario has its own
# namespaces, so the same private ranges are reused; nothing is routed outside.
CLIENT_ADDRESS = "10.77.1.2"
CLIENT_NETWORK = "10.77.1.0/24"  # the client side of the router
CLIENT_ADDRESS6 = "fd77:1::2"
PROXY_ADDRESS = "10.77.1.1"  # the router's address on the client side
PROXY_ADDRESS6 = "fd77:1::1"
ROUTER_ORIGIN_SIDE = "10.77.2.1"
ROUTER_ORIGIN_SIDE6 = "fd77:2::1"
ORIGIN_ADDRESS = "10.77.2.2"
ORIGIN_ADDRESS6 = "fd77:2::2"
ORIGIN_NAME = "origin.corp.test"  # resolvable in the router namespace only
# The proxy's name, for Kerberos (a ticket names a host, not an address): the
# client's /etc/hosts maps it to PROXY_ADDRESS in the scenarios that use it.
PROXY_NAME = "proxy.corp.test"
CORP_DOMAIN = "corp.test"  # the client's domain in the WPAD scenario

PROXY_PORT = 3128
TRANSPARENT_PORT = 3129  # where the firewall redirects intercepted port-80 traffic
SOCKS_PORT = 1080
# A port on the router where nothing listens: the kernel answers with a TCP
# reset, so a PAC script's first (dead) proxy fails fast.
DEAD_PROXY_PORT = 3130
PAC_PORT = 8081  # the router's HTTP server for pac+http://

# The origin always serves ws:// on 80 and 8080 and wss:// on 443 and 8443.
WS_PORTS = (80, 8080)
WSS_PORTS = (443, 8443)

# Test credentials with characters that must be percent-encoded in a URL.
AUTH_USER = "alice@corp"
AUTH_PASSWORD = "p@ss:w/rd%20!"
# A Windows domain account: the backslash is %5C in the proxy URL.
NTLM_USER = "CORP\\alice"
NTLM_PASSWORD = "ntlm-p@ss/w%rd!"  # NTLM credentials cannot hold ':'
# pproxy reads its credentials from its listen URL's fragment: no URL specials.
SOCKS_CREDENTIALS = ("sockuser", "s0cks-pass-7")
# The Kerberos user of auth-negotiate (a realm made for the scenario) as the
# proxy must have authenticated it.
KERBEROS_USER = "alice"
KERBEROS_PRINCIPAL = "alice@TUNNELWS.TEST"

#: The proxy variables a scenario sets, by ``Scenario.proxy_env``: every name
#: a library reads for the URL's scheme (curl, urllib and python-websockets
#: read ``http(s)_proxy``; aiohttp and Node's proxy-from-env read
#: ``ws(s)_proxy`` for WebSocket URLs), or ``ALL_PROXY`` alone.
PROXY_ENV_NAMES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "both": (
            "http_proxy",
            "https_proxy",
            "ws_proxy",
            "wss_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "WS_PROXY",
            "WSS_PROXY",
        ),
        "upper": ("HTTP_PROXY", "HTTPS_PROXY", "WS_PROXY", "WSS_PROXY"),
        "all": ("ALL_PROXY",),
    }
)


class Extension(enum.Enum):
    """A convention of tunnelws's own that a scenario rests on, beyond what
    RFCs and the clients' own documentation define. Scenarios with one are
    scored apart ("extension"); the rest are "standard"."""

    PAC_URL = "`pac+…` URLs in the proxy variables naming a PAC file"
    HEADER_CAP = "a 64 KiB cap on a proxy's reply header block"
    NO_PROXY_CIDR = "CIDR ranges in `no_proxy`"
    SOCKS_IN_ALL_PROXY = "a SOCKS proxy given only in `ALL_PROXY`"
    HTTP_FALLBACK = "the HTTP fallback (tunnelws's own protocol when WebSocket cannot pass)"


class Firewall(enum.Enum):
    """What the router does with the client's own (non-proxy) traffic."""

    OPEN = "open"  # forwarded to the origin
    REJECT = "reject"  # TCP reset / ICMP unreachable
    DROP = "drop"  # silently dropped (a black hole)
    TRANSPARENT_80 = "transparent-80"  # port 80 redirected to a proxy, 443 open, rest rejected


class ProxyKind(enum.Enum):
    COMPANION = "companion"  # tunnelws proxy
    SQUID = "squid"
    TINYPROXY = "tinyproxy"
    PPROXY = "pproxy"  # the Python module, run with the harness's interpreter
    SOCKS5 = "socks5"  # pproxy's SOCKS5 listener on SOCKS_PORT
    MICROSOCKS = "microsocks"  # Debian's microsocks (SOCKS5 only) on SOCKS_PORT


class PacDelivery(enum.Enum):
    """How the client gets a PAC file instead of a proxy URL."""

    FILE = "file"  # pac+file:///PATH (a file the client can read)
    HTTP = "http"  # pac+http://ROUTER:PAC_PORT/proxy.pac
    # pac+wpad: the client's /etc/hosts names it HOST.corp.test and maps
    # wpad.corp.test to the router, which serves /wpad.dat on port 80.
    WPAD = "wpad"


@dataclass(frozen=True)
class ProxySpec:
    """The proxy running in the router namespace."""

    kind: ProxyKind = ProxyKind.COMPANION
    # Extra command-line options for ``tunnelws proxy`` (companion only).
    options: tuple[str, ...] = ()
    # A Kerberos realm (MIT KDC on the router) whose keytab the companion
    # accepts tickets with; the client gets KERBEROS_USER's ticket cache.
    kerberos: bool = False
    tls: bool = False  # an https:// proxy (certificate from the harness CA)
    auth: tuple[str, str] | None = None  # credentials the proxy demands
    intercept: bool = False  # companion re-signs TLS with its own CA
    # The client's CA bundle is the interception CA (else the origin's CA).
    client_trusts_intercept_ca: bool = False
    # The interception CA is added to the client namespace's system store
    # (/etc/ssl) and the client gets no CA variables at all.
    intercept_ca_in_system_store: bool = False
    # Scheme of the proxy URL the client is given ("socks5h", ...); by default
    # "https" for a TLS proxy and "http" otherwise.
    url_scheme: str | None = None

    @property
    def port(self) -> int:
        return SOCKS_PORT if self.kind in (ProxyKind.SOCKS5, ProxyKind.MICROSOCKS) else PROXY_PORT

    @property
    def client_scheme(self) -> str:
        if self.url_scheme is not None:
            return self.url_scheme
        return "https" if self.tls else "http"


@dataclass(frozen=True)
class Scenario:
    """One row of the catalogue (or one half of a row with two URLs)."""

    id: str
    section: str
    network: str  # what the network does, in words
    expect: str  # "pass" or "fail:CATEGORY" (tunnelws error category)
    scheme: str = "ws"  # "ws" or "wss"
    origin_host: str = ORIGIN_ADDRESS  # host in TUNNELWS_URL
    origin_port: int | None = None  # default 8080 for ws, 8443 for wss
    firewall: Firewall = Firewall.REJECT
    proxy: ProxySpec | None = None
    # Transparent-80 runs a proxy that the client is not told about.
    configure_proxy: bool = True
    # How the proxy reaches the client: a key of PROXY_ENV_NAMES ("both": lower
    # and upper case, "upper": upper case only, "all": ALL_PROXY only).
    proxy_env: str = "both"
    # The proxy's host in the proxy URL (PROXY_NAME: the client's hosts file has it).
    proxy_host: str = PROXY_ADDRESS
    # Credentials put into the proxy URL given to the client (user, password).
    url_credentials: tuple[str, str] | None = None
    no_proxy: str | None = None
    # The client namespace can resolve ORIGIN_NAME (for no_proxy by name).
    client_knows_origin_name: bool = False
    time_limit: float = 8.0
    connect_timeout: float = 5.0  # TUNNELWS_CONNECT_TIMEOUT, a hint to clients
    idle: float | None = None  # TUNNELWS_IDLE
    message_repeat: int = 1  # TUNNELWS_MESSAGE_REPEAT
    # The proxy must see a CONNECT for exactly this target.
    expect_connect_target: str | None = None
    # The proxy must see no request at all (no_proxy bypass).
    expect_proxy_untouched: bool = False
    # The proxy must see exactly this many CONNECTs (in a pass).
    expect_connects: int | None = None
    # More CONNECTs than this in one run is an authentication loop. NTLM needs
    # three on one connection: the unauthenticated probe, type 1, type 3.
    max_connects: int = 2
    # The companion's log must show NTLM messages 1, 2 and 3 on one connection.
    expect_ntlm_one_connection: bool = False
    # The companion must log the tunnel as authenticated as (user, mechanism).
    expect_authenticated: tuple[str, str] | None = None
    # The client is supposed to resolve the origin's name itself (socks5://),
    # so its DNS queries are not a flag.
    client_resolves_names: bool = False
    # The client gets a PAC file (in every proxy variable) instead of a proxy
    # URL; it answers PROXY <dead port>; PROXY <the proxy>; DIRECT.
    pac: PacDelivery | None = None
    requires: tuple[str, ...] = field(default=())  # system binaries
    group: str = ""  # catalogue id this scenario belongs to (default: its id)
    # The tunnelws convention it tests, if any (None: standard behaviour).
    extension: Extension | None = None
    # What a correct client with tunnelws's HTTP fallback does, where it
    # differs from ``expect`` (which stays the native-only expectation).
    expect_with_fallback: str | None = None

    @property
    def catalogue_id(self) -> str:
        return self.group or self.id

    def expect_for(self, *, fallback: bool) -> str:
        """The expectation a client is judged on: with an HTTP fallback, or native only."""
        if fallback and self.expect_with_fallback is not None:
            return self.expect_with_fallback
        return self.expect

    @property
    def expect_both(self) -> str:
        """Both expectations in words, where they differ (tables, listings)."""
        if self.expect_with_fallback is None:
            return self.expect
        return f"{self.expect}; with a fallback: {self.expect_with_fallback}"

    @property
    def score(self) -> str:
        """ "standard" or "extension": which of a client's two scores it counts in."""
        return "standard" if self.extension is None else "extension"

    @property
    def expects_pass(self) -> bool:
        return self.expect == "pass"

    @property
    def expected_category(self) -> str | None:
        return None if self.expects_pass else self.expect.partition(":")[2] or None

    @property
    def port(self) -> int:
        if self.origin_port is not None:
            return self.origin_port
        return 8080 if self.scheme == "ws" else 8443

    @property
    def url(self) -> str:
        host = f"[{self.origin_host}]" if ":" in self.origin_host else self.origin_host
        return f"{self.scheme}://{host}:{self.port}/echo"

    @property
    def authority(self) -> str:
        host = f"[{self.origin_host}]" if ":" in self.origin_host else self.origin_host
        return f"{host}:{self.port}"

    @property
    def proxy_in_use(self) -> bool:
        """The client is told about a proxy and must not go around it."""
        return self.proxy is not None and self.configure_proxy and self.no_proxy is None


_A = "A. No proxy"
_B = "B. Explicit proxy"
_C = "C. Authentication"
_D = "D. Proxy policy and quirks"
_E = "E. Transparent and intercepting proxies"
_F = "F. Faults while connected"
_G = "G. Other proxy kinds and configuration"
_H = "H. WebSocket blocked, HTTP passes"
_COMPANION = ProxySpec()
_CREDENTIALS = (AUTH_USER, AUTH_PASSWORD)
_BASIC = ProxySpec(options=("--auth", f"{AUTH_USER}:{AUTH_PASSWORD}"), auth=_CREDENTIALS)
_NTLM_CREDENTIALS = (NTLM_USER, NTLM_PASSWORD)
_NTLM = ProxySpec(
    options=("--auth", f"{NTLM_USER}:{NTLM_PASSWORD}", "--auth-scheme", "ntlm"),
    auth=_NTLM_CREDENTIALS,
)


# The idle-timeout scenario's limit: above common default ping intervals (20 s
# in python-websockets and tunnelws) and below the client's idle wait.
IDLE_LIMIT = 30.0


def _quirk(*options: str) -> ProxySpec:
    return ProxySpec(options=options)


CATALOGUE: tuple[Scenario, ...] = (
    # A. No proxy
    Scenario(
        "open-direct", _A, "direct egress open, no proxy configured", "pass", firewall=Firewall.OPEN
    ),
    Scenario(
        "blocked-reject",
        _A,
        "direct egress rejected (TCP reset), no proxy",
        "fail:connect",
        time_limit=3.0,
    ),
    Scenario(
        "blocked-blackhole",
        _A,
        "direct egress silently dropped, no proxy",
        "fail:timeout",
        firewall=Firewall.DROP,
        connect_timeout=4.0,
        time_limit=10.0,
    ),
    # B. Explicit proxy
    Scenario(
        "proxy-ws",
        _B,
        "only the proxy reachable; ws:// origin",
        "pass",
        proxy=_COMPANION,
        expect_connect_target=f"{ORIGIN_ADDRESS}:8080",
    ),
    Scenario(
        "proxy-wss",
        _B,
        "only the proxy reachable; wss:// origin",
        "pass",
        scheme="wss",
        proxy=_COMPANION,
        expect_connect_target=f"{ORIGIN_ADDRESS}:8443",
    ),
    Scenario(
        "proxy-env-upper",
        _B,
        "proxy given only as HTTPS_PROXY/HTTP_PROXY",
        "pass",
        proxy=_COMPANION,
        proxy_env="upper",
    ),
    Scenario(
        "proxy-env-all",
        _B,
        "proxy given only as ALL_PROXY",
        "pass",
        proxy=_COMPANION,
        proxy_env="all",
    ),
    Scenario(
        "no-proxy-name",
        _B,
        "no_proxy names the origin; direct egress open",
        "pass",
        origin_host=ORIGIN_NAME,
        proxy=_COMPANION,
        no_proxy=ORIGIN_NAME,
        client_knows_origin_name=True,
        firewall=Firewall.OPEN,
        expect_proxy_untouched=True,
    ),
    Scenario(
        "no-proxy-cidr",
        _B,
        "no_proxy holds a CIDR containing the origin; direct open",
        "pass",
        proxy=_COMPANION,
        no_proxy="10.77.2.0/24",
        firewall=Firewall.OPEN,
        expect_proxy_untouched=True,
        extension=Extension.NO_PROXY_CIDR,
    ),
    Scenario(
        "proxy-no-dns",
        _B,
        "origin addressed by a name only the proxy can resolve",
        "pass",
        origin_host=ORIGIN_NAME,
        proxy=_COMPANION,
        expect_connect_target=f"{ORIGIN_NAME}:8080",
    ),
    Scenario(
        "proxy-ipv6-target",
        _B,
        "origin at an IPv6 literal",
        "pass",
        origin_host=ORIGIN_ADDRESS6,
        proxy=_COMPANION,
        expect_connect_target=f"[{ORIGIN_ADDRESS6}]:8080",
    ),
    Scenario(
        "https-proxy",
        _B,
        "proxy URL is https://: TLS to the proxy, TLS-in-TLS for wss://",
        "pass",
        scheme="wss",
        proxy=ProxySpec(tls=True),
    ),
    # C. Authentication
    Scenario(
        "auth-basic",
        _C,
        "proxy demands Basic; credentials (with specials) in the proxy URL",
        "pass",
        proxy=_BASIC,
        url_credentials=_CREDENTIALS,
    ),
    Scenario(
        "auth-basic-missing",
        _C,
        "proxy demands Basic; no credentials given",
        "fail:proxy-auth",
        proxy=_BASIC,
    ),
    Scenario(
        "auth-basic-wrong",
        _C,
        "proxy demands Basic; wrong credentials",
        "fail:proxy-auth",
        proxy=_BASIC,
        url_credentials=(AUTH_USER, "wrong-password"),
    ),
    Scenario(
        "auth-407-close",
        _C,
        "proxy sends 407 and closes the connection",
        "pass",
        proxy=ProxySpec(options=(*_BASIC.options, "--close-after-407"), auth=_CREDENTIALS),
        url_credentials=_CREDENTIALS,
    ),
    Scenario(
        "auth-digest",
        _C,
        "proxy demands Digest (qop=auth)",
        "pass",
        proxy=ProxySpec(options=(*_BASIC.options, "--auth-scheme", "digest"), auth=_CREDENTIALS),
        url_credentials=_CREDENTIALS,
    ),
    Scenario(
        "auth-ntlm",
        _C,
        "proxy demands NTLM (user CORP\\alice); the handshake is bound to one connection",
        "pass",
        proxy=_NTLM,
        url_credentials=_NTLM_CREDENTIALS,
        max_connects=3,
        expect_ntlm_one_connection=True,
    ),
    Scenario(
        "auth-ntlm-wrong",
        _C,
        "proxy demands NTLM; wrong password",
        "fail:proxy-auth",
        proxy=_NTLM,
        url_credentials=(NTLM_USER, "wrong-password"),
        max_connects=3,
    ),
    Scenario(
        "auth-ntlm-close",
        _C,
        "proxy demands NTLM but closes the connection after every 407",
        "fail:proxy-auth",
        proxy=ProxySpec(options=(*_NTLM.options, "--close-after-407"), auth=_NTLM_CREDENTIALS),
        url_credentials=_NTLM_CREDENTIALS,
        max_connects=3,
    ),
    Scenario(
        "auth-negotiate",
        _C,
        "proxy demands Negotiate; a real KDC, the client holds alice's Kerberos ticket "
        "(kinit), the proxy URL names proxy.corp.test and has no credentials",
        "pass",
        proxy=ProxySpec(
            options=("--auth", f"{NTLM_USER}:{NTLM_PASSWORD}", "--auth-scheme", "negotiate"),
            auth=_NTLM_CREDENTIALS,
            kerberos=True,
        ),
        proxy_host=PROXY_NAME,
        expect_authenticated=(KERBEROS_PRINCIPAL, "kerberos"),
        requires=KERBEROS_BINARIES,
    ),
    # D. Proxy policy and quirks
    Scenario(
        "ports-443-only-wss",
        _D,
        "squid, CONNECT only to 443; wss:// on 443",
        "pass",
        scheme="wss",
        origin_port=443,
        proxy=ProxySpec(kind=ProxyKind.SQUID),
        requires=("squid",),
        group="ports-443-only",
    ),
    Scenario(
        "ports-443-only-ws",
        _D,
        "squid, CONNECT only to 443; ws:// on 8080",
        "fail:proxy-refused",
        expect_with_fallback="pass",  # squid forwards plain requests to 8080
        proxy=ProxySpec(kind=ProxyKind.SQUID),
        requires=("squid",),
        group="ports-443-only",
    ),
    Scenario(
        "domain-deny",
        _D,
        "proxy denies the origin's host name",
        "fail:proxy-refused",
        origin_host=ORIGIN_NAME,
        proxy=_quirk("--deny-host", ORIGIN_NAME),
    ),
    Scenario(
        "proxy-http10",
        _D,
        "tinyproxy answers HTTP/1.0 200",
        "pass",
        proxy=ProxySpec(kind=ProxyKind.TINYPROXY),
        requires=("tinyproxy",),
    ),
    Scenario(
        "proxy-pproxy",
        _D,
        "pproxy (a real proxy; its 200 carries Connection: close)",
        "pass",
        proxy=ProxySpec(kind=ProxyKind.PPROXY),
    ),
    Scenario(
        "proxy-2xx-quirks",
        _D,
        "200 with Connection: close, Content-Length and Transfer-Encoding",
        "pass",
        proxy=_quirk(
            "--quirk",
            "connection-close",
            "--quirk",
            "content-length",
            "--quirk",
            "transfer-encoding",
        ),
    ),
    Scenario(
        "proxy-dribble",
        _D,
        "reply arrives one byte at a time",
        "pass",
        proxy=_quirk("--quirk", "dribble"),
    ),
    Scenario(
        "proxy-error-html",
        _D,
        "502 with an HTML body",
        "fail:proxy-refused",
        proxy=_quirk("--reply-status", "502"),
    ),
    Scenario(
        "proxy-garbage",
        _D,
        "proxy answers with non-HTTP bytes",
        "fail:proxy-protocol",
        proxy=_quirk("--quirk", "garbage"),
    ),
    Scenario(
        "proxy-close",
        _D,
        "proxy closes without answering",
        "fail:proxy-protocol",
        proxy=_quirk("--quirk", "close-without-reply"),
    ),
    Scenario(
        "proxy-silent",
        _D,
        "proxy accepts and never answers",
        "fail:timeout",
        proxy=_quirk("--quirk", "never-reply"),
        connect_timeout=4.0,
        time_limit=10.0,
    ),
    Scenario(
        "proxy-huge-headers",
        _D,
        "reply header block larger than 64 KiB",
        "fail:proxy-protocol",
        proxy=_quirk("--quirk", "huge-headers"),
        extension=Extension.HEADER_CAP,
    ),
    # E. Transparent and intercepting proxies
    Scenario(
        "transparent-80-ws",
        _E,
        "no proxy configured; port 80 redirected to a proxy that strips Upgrade; ws:// on 80",
        "fail:handshake",
        expect_with_fallback="pass",  # plain requests pass the filter
        origin_port=80,
        firewall=Firewall.TRANSPARENT_80,
        proxy=ProxySpec(options=("--transparent", "--strip-upgrade")),
        configure_proxy=False,
        group="transparent-80",
    ),
    Scenario(
        "transparent-80-wss",
        _E,
        "no proxy configured; port 80 intercepted, 443 open; wss:// on 443",
        "pass",
        scheme="wss",
        origin_port=443,
        firewall=Firewall.TRANSPARENT_80,
        proxy=ProxySpec(options=("--transparent", "--strip-upgrade")),
        configure_proxy=False,
        group="transparent-80",
    ),
    Scenario(
        "tls-intercept-untrusted",
        _E,
        "explicit proxy re-signs TLS with a corporate CA the client does not trust",
        "fail:tls",
        scheme="wss",
        proxy=ProxySpec(intercept=True),
    ),
    Scenario(
        "tls-intercept-trusted",
        _E,
        "explicit proxy re-signs TLS; the corporate CA is the client's CA bundle",
        "pass",
        scheme="wss",
        proxy=ProxySpec(intercept=True, client_trusts_intercept_ca=True),
    ),
    Scenario(
        "tls-intercept-system-store",
        _E,
        "explicit proxy re-signs TLS; the corporate CA is in the client's system store "
        "(/etc/ssl), no CA variables",
        "pass",
        scheme="wss",
        proxy=ProxySpec(intercept=True, intercept_ca_in_system_store=True),
    ),
    # F. Faults while connected
    Scenario(
        "idle-timeout",
        _F,
        "proxy closes tunnels idle for 30 s; the client idles 40 s before sending again "
        "(keepalive pings at a default interval, e.g. 20 s, keep the tunnel)",
        "pass",
        proxy=_quirk("--idle-timeout", f"{IDLE_LIMIT:g}"),
        idle=40.0,
        time_limit=50.0,
    ),
    Scenario(
        "tunnel-reset",
        _F,
        "proxy resets the tunnel 1 s after it opened, while the client idles 5 s",
        "fail:connection-lost",
        proxy=_quirk("--reset-after-seconds", "1"),
        idle=5.0,
        time_limit=4.0,
    ),
    Scenario(
        "slow-link",
        _F,
        "100 ms latency each way, writes sliced to 1..16 bytes",
        "pass",
        proxy=_quirk("--latency", "0.1", "--slice", "1:16", "--seed", "7"),
        time_limit=10.0,
    ),
    Scenario(
        "bandwidth-limit",
        _F,
        "64 KB/s each way; a 256 KiB message",
        "pass",
        proxy=_quirk("--bandwidth", "65536"),
        message_repeat=64,
        time_limit=20.0,
    ),
    # G. Other proxy kinds and configuration
    Scenario(
        "socks5h",
        _G,
        "SOCKS5 proxy with a password, only in ALL_PROXY=socks5h://; the proxy resolves names",
        "pass",
        origin_host=ORIGIN_NAME,
        proxy=ProxySpec(kind=ProxyKind.SOCKS5, auth=SOCKS_CREDENTIALS, url_scheme="socks5h"),
        proxy_env="all",
        url_credentials=SOCKS_CREDENTIALS,
        expect_connect_target=f"{ORIGIN_NAME}:8080",
        extension=Extension.SOCKS_IN_ALL_PROXY,
    ),
    Scenario(
        "socks5h-microsocks",
        _G,
        "the same through microsocks, a small C SOCKS5 server",
        "pass",
        origin_host=ORIGIN_NAME,
        proxy=ProxySpec(kind=ProxyKind.MICROSOCKS, auth=SOCKS_CREDENTIALS, url_scheme="socks5h"),
        proxy_env="all",
        url_credentials=SOCKS_CREDENTIALS,
        expect_connect_target=f"{ORIGIN_NAME}:8080",
        requires=("microsocks",),
        extension=Extension.SOCKS_IN_ALL_PROXY,
    ),
    Scenario(
        "socks5h-proxy-variables",
        _G,
        "the same SOCKS5 proxy as socks5h:// in http_proxy/https_proxy (and ws/wss_proxy), "
        "as curl and python-websockets document it",
        "pass",
        origin_host=ORIGIN_NAME,
        proxy=ProxySpec(kind=ProxyKind.SOCKS5, auth=SOCKS_CREDENTIALS, url_scheme="socks5h"),
        url_credentials=SOCKS_CREDENTIALS,
        expect_connect_target=f"{ORIGIN_NAME}:8080",
    ),
    Scenario(
        "socks5-local-dns",
        _G,
        "same, but socks5://: the client must resolve the name itself and has no DNS",
        "fail:connect",
        origin_host=ORIGIN_NAME,
        proxy=ProxySpec(kind=ProxyKind.SOCKS5, auth=SOCKS_CREDENTIALS, url_scheme="socks5"),
        proxy_env="all",
        url_credentials=SOCKS_CREDENTIALS,
        client_resolves_names=True,
        time_limit=5.0,
        extension=Extension.SOCKS_IN_ALL_PROXY,
    ),
    Scenario(
        "pac-failover",
        _G,
        "pac+file:// in the proxy variables; PAC answers PROXY <closed port>; PROXY <proxy>; "
        "DIRECT",
        "pass",
        proxy=_COMPANION,
        pac=PacDelivery.FILE,
        extension=Extension.PAC_URL,
        expect_connects=1,
        expect_connect_target=f"{ORIGIN_ADDRESS}:8080",
    ),
    Scenario(
        "pac-http-failover",
        _G,
        "same PAC served by the router over HTTP (pac+http://); wss://",
        "pass",
        scheme="wss",
        proxy=_COMPANION,
        pac=PacDelivery.HTTP,
        extension=Extension.PAC_URL,
        expect_connects=1,
        expect_connect_target=f"{ORIGIN_ADDRESS}:8443",
    ),
    Scenario(
        "pac-wpad",
        _G,
        "pac+wpad: in the proxy variables; the client is HOST.corp.test and "
        "http://wpad.corp.test/wpad.dat (the router) serves the same PAC",
        "pass",
        proxy=_COMPANION,
        pac=PacDelivery.WPAD,
        extension=Extension.PAC_URL,
        expect_connects=1,
        expect_connect_target=f"{ORIGIN_ADDRESS}:8080",
    ),
    # H. WebSocket blocked, HTTP passes: the origin offers the HTTP fallback
    # (docs/fallback-protocol.md) on /echo; clients without one fail natively.
    Scenario(
        "forward-only-ws",
        _H,
        "proxy refuses every CONNECT (405) and strips Upgrade: only forwarded HTTP passes",
        "fail:proxy-refused",
        expect_with_fallback="pass",
        proxy=_quirk("--profile", "forward-only"),
        extension=Extension.HTTP_FALLBACK,
    ),
    Scenario(
        "squid-default-ws",
        _H,
        "companion as squid's stock squid.conf: CONNECT only to 443, forwarded requests to "
        "Safe_ports, Upgrade stripped; ws:// on 8080",
        "fail:proxy-refused",
        expect_with_fallback="pass",
        proxy=_quirk("--profile", "squid-default"),
        extension=Extension.HTTP_FALLBACK,
    ),
    Scenario(
        "intercept-no-upgrade",
        _H,
        "explicit proxy re-signs TLS (CA trusted) and strips Upgrade inside it; wss://",
        "fail:handshake",
        expect_with_fallback="pass",
        scheme="wss",
        proxy=ProxySpec(
            options=("--strip-upgrade",), intercept=True, client_trusts_intercept_ca=True
        ),
        # No authentication here: the fallback over wss:// opens one tunnel
        # per HTTP connection, and this proxy closes each after one request.
        max_connects=16,
        extension=Extension.HTTP_FALLBACK,
    ),
    Scenario(
        "buffering-proxy",
        _H,
        "forward-only proxy holding every response until 1 MiB or its end (long-polling needed)",
        "fail:proxy-refused",
        expect_with_fallback="pass",
        proxy=_quirk("--profile", "buffering"),
        time_limit=12.0,
        extension=Extension.HTTP_FALLBACK,
    ),
    Scenario(
        "request-time-limit",
        _H,
        "forward-only proxy closing every forwarded request after 2 s; the client idles 5 s "
        "between messages",
        "fail:proxy-refused",
        expect_with_fallback="pass",
        proxy=_quirk("--profile", "forward-only", "--request-time-limit", "2"),
        idle=5.0,
        time_limit=14.0,
        extension=Extension.HTTP_FALLBACK,
    ),
)


#: Every scenario by its id.
BY_ID: Mapping[str, Scenario] = MappingProxyType({s.id: s for s in CATALOGUE})


def select(ids: list[str] | tuple[str, ...]) -> list[Scenario]:
    """Scenarios named by id or catalogue id (group), in catalogue order.

    Raises ``KeyError`` naming the unknown ids.
    """
    if not ids:
        return list(CATALOGUE)
    wanted = set(ids)
    known = {s.id for s in CATALOGUE} | {s.catalogue_id for s in CATALOGUE}
    unknown = sorted(wanted - known)
    if unknown:
        raise KeyError(", ".join(unknown))
    return [s for s in CATALOGUE if s.id in wanted or s.catalogue_id in wanted]
