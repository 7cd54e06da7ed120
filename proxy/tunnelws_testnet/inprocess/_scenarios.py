"""The scenarios an in-process network can play: the subset of the harness
catalogue (:data:`tunnelws_testnet.harness.CATALOGUE`) that needs no root,
listed in docs/pytest-plugin.md.

Each :class:`Scenario` is data: how the proxy behaves (a companion
:class:`ProxyConfig`), what the firewall lets the client do, and how the
client is told about the proxy (environment variable style, ``no_proxy``,
credentials). :func:`~tunnelws_testnet.inprocess.open_network` turns it into
running servers. The built-in ones in :data:`SCENARIOS` carry the catalogue's
ids and take its expectations; they add only how to build the network here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from ..companion import ProxyConfig, ReplyQuirks, Toxics
from ..harness import BY_ID
from ._firewall import Egress

__all__ = ["ORIGIN_HOST", "PROXY_PASSWORD", "PROXY_USER", "SCENARIOS", "Scenario"]

#: The origin's name: only the proxy can resolve it (unless the scenario
#: gives the client DNS), so a client that looks it up locally is caught.
ORIGIN_HOST = "origin.test"
PROXY_USER = "alice"
#: Characters that must be percent-encoded in a proxy URL.
PROXY_PASSWORD = "s3cr@t:/%"


@dataclass(frozen=True)
class Scenario:
    """One corporate network, as data.

    expect: ``"pass"`` or ``"fail:CATEGORY"`` (a tunnelws error category).
    scheme: the origin URL's scheme.
    proxied: whether a proxy is configured for the client at all.
    egress: what the firewall does to the client's direct connects.
    client_dns: whether the client can resolve the origin's name itself.
    env_style: ``lower`` (``http_proxy``/``https_proxy``/``ws_proxy``/``wss_proxy``),
        ``upper`` (the same in upper case) or ``all`` (``ALL_PROXY`` only).
    no_proxy: the ``no_proxy`` value given to the client.
    credentials: none, the right ones or wrong ones in the proxy URL.
    proxy: the companion proxy's behaviour.
    https_proxy: TLS between client and proxy (an ``https://`` proxy URL).
    intercept: the proxy re-signs TLS; ``trusted`` adds its CA to the client's
        bundle, ``untrusted`` does not.
    idle: seconds a client should wait before sending a second message (the
        fault only shows then); 0 = one message is enough.
    """

    id: str
    summary: str
    expect: str = "pass"
    scheme: Literal["ws", "wss"] = "wss"
    proxied: bool = True
    egress: Egress = "reject"
    client_dns: bool = False
    env_style: Literal["lower", "upper", "all"] = "lower"
    no_proxy: str = ""
    credentials: Literal["none", "right", "wrong"] = "none"
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    https_proxy: bool = False
    intercept: Literal["none", "trusted", "untrusted"] = "none"
    idle: float = 0.0

    @property
    def expected_category(self) -> str | None:
        """The error category a correct client fails with, or None for a pass."""
        return None if self.expect == "pass" else self.expect.removeprefix("fail:")


_AUTH = ProxyConfig(auth=(PROXY_USER, PROXY_PASSWORD))


def _catalogue(*scenarios: Scenario) -> dict[str, Scenario]:
    """By id, each with the expectation of the catalogue's scenario of that
    id (KeyError for an id the catalogue lacks)."""
    return {s.id: replace(s, expect=BY_ID[s.id].expect) for s in scenarios}


#: Every scenario by id (the expectations come from the catalogue).
SCENARIOS: dict[str, Scenario] = _catalogue(
    # A. No proxy
    Scenario("open-direct", "no proxy, direct egress open", proxied=False, egress="open",
             client_dns=True),
    Scenario("blocked-reject", "no proxy, direct egress refused", proxied=False,
             client_dns=True),
    Scenario("blocked-blackhole", "no proxy, direct egress silently dropped",
             proxied=False, egress="blackhole", client_dns=True),
    # B. Explicit proxy
    Scenario("proxy-ws", "only the proxy reachable, ws:// origin", scheme="ws"),
    Scenario("proxy-wss", "only the proxy reachable, wss:// origin"),
    Scenario("proxy-env-upper", "proxy only in HTTPS_PROXY/HTTP_PROXY", env_style="upper"),
    Scenario("proxy-env-all", "proxy only in ALL_PROXY", env_style="all"),
    Scenario("no-proxy-name", "no_proxy names the origin, direct egress open",
             egress="open", client_dns=True, no_proxy=ORIGIN_HOST),
    Scenario("proxy-no-dns", "origin name only the proxy can resolve"),
    Scenario("https-proxy", "TLS to the proxy, TLS inside it to the origin", https_proxy=True),
    # C. Authentication
    Scenario("auth-basic", "Basic, credentials in the proxy URL", credentials="right",
             proxy=_AUTH),
    Scenario("auth-basic-missing", "Basic demanded, no credentials", proxy=_AUTH),
    Scenario("auth-basic-wrong", "Basic demanded, wrong credentials",
             credentials="wrong", proxy=_AUTH),
    Scenario("auth-407-close", "407 then close: retry on a new connection",
             credentials="right",
             proxy=ProxyConfig(auth=(PROXY_USER, PROXY_PASSWORD), close_after_407=True)),
    Scenario("auth-digest", "Digest (qop=auth)", credentials="right",
             proxy=ProxyConfig(auth=(PROXY_USER, PROXY_PASSWORD), auth_scheme="digest")),
    # D. Proxy policy and quirks
    Scenario("domain-deny", "the proxy denies the origin's host",
             proxy=ProxyConfig(deny_hosts=(ORIGIN_HOST,))),
    Scenario("proxy-http10", "HTTP/1.0 200", proxy=ProxyConfig(quirks=ReplyQuirks(http10=True))),
    Scenario("proxy-2xx-quirks", "200 with Connection: close, Content-Length, Transfer-Encoding",
             proxy=ProxyConfig(quirks=ReplyQuirks(connection_close=True, content_length=True,
                                                  transfer_encoding=True))),
    Scenario("proxy-dribble", "reply one byte at a time",
             proxy=ProxyConfig(quirks=ReplyQuirks(dribble=True))),
    Scenario("proxy-error-html", "502 with an HTML body",
             proxy=ProxyConfig(quirks=ReplyQuirks(reply_status=502))),
    Scenario("proxy-garbage", "non-HTTP bytes",
             proxy=ProxyConfig(quirks=ReplyQuirks(garbage=True))),
    Scenario("proxy-close", "close without answering",
             proxy=ProxyConfig(quirks=ReplyQuirks(close_without_reply=True))),
    Scenario("proxy-silent", "never answers",
             proxy=ProxyConfig(quirks=ReplyQuirks(never_reply=True))),
    Scenario("proxy-huge-headers", "reply header block over 64 KiB",
             proxy=ProxyConfig(quirks=ReplyQuirks(huge_headers=True))),
    # E. Intercepting proxies
    Scenario("tls-intercept-untrusted", "TLS re-signed by a CA the client lacks",
             intercept="untrusted"),
    Scenario("tls-intercept-trusted", "TLS re-signed by an installed corporate CA",
             intercept="trusted"),
    # F. Faults while connected
    Scenario("idle-timeout", "tunnels idle for 3 s are closed (use keepalive pings)",
             idle=4.0, proxy=ProxyConfig(toxics=Toxics(idle_timeout=3.0))),
    Scenario("tunnel-reset", "the tunnel is reset 1 s after it opened", idle=1.5,
             proxy=ProxyConfig(toxics=Toxics(reset_after_seconds=1.0))),
    Scenario("slow-link", "100 ms each way, writes sliced to 1..16 bytes",
             proxy=ProxyConfig(toxics=Toxics(latency_up=0.1, latency_down=0.1, slice_min=1,
                                             slice_max=16, seed=1))),
    Scenario("bandwidth-limit", "64 KB/s each way", proxy=ProxyConfig(toxics=Toxics(
        bandwidth=65536))),
)  # fmt: skip
