"""The companion test proxy: an HTTP proxy with the behaviours of real
corporate proxies (auth, port and host policy, odd replies, TLS interception,
Upgrade stripping) and faults on its tunnels (latency, slicing, bandwidth,
resets, idle timeouts), for testing clients against them.

    from tunnelws_testnet.companion import ProxyConfig, serve_proxy

    async with trio.open_nursery() as nursery:
        proxy = await nursery.start(serve_proxy, ProxyConfig(auth=("u", "p")))
        print(proxy.url, proxy.stats.connects)

See docs/companion-proxy.md.
"""

from ._auth import Authenticator, AuthResult
from ._config import ProxyConfig
from ._intercept import CA_FILE_NAME
from ._log import LogSink
from ._policy import HostRules, Policy, Refusal
from ._profiles import PROFILES, SQUID_SAFE_PORTS, Profile
from ._quirks import ReplyQuirks
from ._request import BadRequest, RequestHead, RequestHeadParser
from ._server import RunningProxy, serve_proxy
from ._stats import ProxyStats
from ._toxics import Toxics

__all__ = [
    "CA_FILE_NAME",
    "PROFILES",
    "SQUID_SAFE_PORTS",
    "AuthResult",
    "Authenticator",
    "BadRequest",
    "HostRules",
    "LogSink",
    "Policy",
    "Profile",
    "ProxyConfig",
    "ProxyStats",
    "Refusal",
    "ReplyQuirks",
    "RequestHead",
    "RequestHeadParser",
    "RunningProxy",
    "Toxics",
    "serve_proxy",
]
