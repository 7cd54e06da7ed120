"""Real proxies as processes: one object per proxy kind.

Each kind (:class:`CompanionProxy`, :class:`Squid`, :class:`Tinyproxy`,
:class:`Pproxy`, :class:`Microsocks`, :class:`Mitmproxy`) is a frozen
dataclass of its options with the one definition of how it runs: its
command line and configuration files, where it listens, how to tell it is
ready, how to stop it, and how to read its log. ``peer.launch(directory,
host, port)`` returns a :class:`Launch` (argv, output file, log, readiness
probe, stop signal, ``finish()``); the harness starts it inside a network
namespace, :func:`run_proxy` / :func:`open_proxy` on loopback::

    from tunnelws_testnet.peers import Squid, run_proxy

    with run_proxy(Squid(allow_ports=(443,)), directory=tmp) as squid:
        ...  # point a client at squid.url
        squid.wait_for_access_log("TCP_DENIED/403")
        print(squid.requests())

Processes are stopped by PID (the kind's stop signal, SIGKILL after 5 s,
then any helper processes it started). See docs/testing.md.
"""

from ._companion import (
    CompanionProxy,
    NtlmMessage,
    parse_authentications,
    parse_companion_log,
    parse_ntlm_messages,
)
from ._kind import (
    Launch,
    LogParser,
    Peer,
    PeerStartError,
    PeerUnavailableError,
    ProxyRequest,
    is_fallback_target,
    json_records,
)
from ._microsocks import Microsocks, parse_microsocks_log
from ._mitmproxy import MITMPROXY_VENV, Mitmproxy, parse_mitmproxy_log
from ._pproxy import Pproxy, parse_pproxy_log
from ._process import alive, find_binary, listening
from ._run import ProxyProcess, free_port, open_proxy, run_proxy
from ._squid import (
    BASIC_REALM,
    DIGEST_REALM,
    STOCK_SAFE_PORTS,
    Squid,
    parse_squid_log,
    squid_config,
)
from ._tinyproxy import Tinyproxy, parse_tinyproxy_log

__all__ = [
    "BASIC_REALM",
    "DIGEST_REALM",
    "MITMPROXY_VENV",
    "STOCK_SAFE_PORTS",
    "CompanionProxy",
    "Launch",
    "LogParser",
    "Microsocks",
    "Mitmproxy",
    "NtlmMessage",
    "Peer",
    "PeerStartError",
    "PeerUnavailableError",
    "Pproxy",
    "ProxyProcess",
    "ProxyRequest",
    "Squid",
    "Tinyproxy",
    "alive",
    "find_binary",
    "free_port",
    "is_fallback_target",
    "json_records",
    "listening",
    "open_proxy",
    "parse_authentications",
    "parse_companion_log",
    "parse_microsocks_log",
    "parse_mitmproxy_log",
    "parse_ntlm_messages",
    "parse_pproxy_log",
    "parse_squid_log",
    "parse_tinyproxy_log",
    "run_proxy",
    "squid_config",
]
