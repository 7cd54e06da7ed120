"""The harness's client adapters (proxy/adapters/), run as subprocesses on
loopback against an in-process scenario network.

The origin is addressed as ``origin.test``, a name only the companion proxy
resolves: a client that ignores its proxy settings cannot even find the
origin, so a pass proves the tunnel. Each adapter's expected outcome records
what its library really does (a limitation is asserted as a failure with the
library's own message, so a fix upstream shows up here).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from conftest import require_binary, skip_or_fail
from tunnelws_testnet.inprocess import (
    ORIGIN_HOST,
    PROXY_PASSWORD,
    CorporateNetwork,
    client_environment,
    open_network,
)

ADAPTERS = Path(__file__).resolve().parent.parent / "proxy" / "adapters"
PYTHON = sys.executable
VENV_BIN = str(Path(sys.executable).parent)


@dataclass(frozen=True)
class Adapter:
    name: str
    command: tuple[str, ...]
    binaries: tuple[str, ...] = ()

    def argv(self) -> list[str]:
        for binary in self.binaries:
            require_binary(binary)
        if self.name.startswith("node-") and not (ADAPTERS / "node_ws" / "node_modules").is_dir():
            skip_or_fail("node_modules missing: run `npm ci` in proxy/adapters/node_ws")
        return list(self.command)


ALL = {
    adapter.name: adapter
    for adapter in (
        Adapter("websockets-trio", (PYTHON, str(ADAPTERS / "python_websockets_trio.py"))),
        Adapter("websockets-asyncio", (PYTHON, str(ADAPTERS / "python_websockets_asyncio.py"))),
        Adapter("websocket-client", (PYTHON, str(ADAPTERS / "websocket_client.py"))),
        Adapter("aiohttp", (PYTHON, str(ADAPTERS / "aiohttp_client.py"))),
        Adapter(
            "aiohttp-proxy-arg", (PYTHON, str(ADAPTERS / "aiohttp_client.py"), "--proxy-argument")
        ),
        Adapter(
            "node-ws",
            ("node", str(ADAPTERS / "node_ws" / "client.mjs"), "https-proxy-agent"),
            ("node",),
        ),
        Adapter(
            "node-proxy-agent",
            ("node", str(ADAPTERS / "node_ws" / "client.mjs"), "proxy-agent"),
            ("node",),
        ),
        Adapter("tunnelws", ("sh", str(ADAPTERS / "tunnelws_cli.sh")), ("timeout",)),
        Adapter("chromium", (PYTHON, str(ADAPTERS / "chromium.py")), ("chromium", "certutil")),
    )
}

SCENARIOS = (
    "proxy-ws",
    "proxy-wss",
    "proxy-env-all",
    "https-proxy",
    "auth-basic",
    "auth-digest",
    "tls-intercept-untrusted",
)

# What each library really does: (adapter, scenario) -> a fragment of the
# error it must print. Every pair not listed must pass.
_NO_DNS = "Name or service not known"  # it went direct and resolved the name itself
# aiohttp sends ws:// to a proxy as an absolute-form GET, which the companion refuses.
_ABSOLUTE_FORM = "400, message='Invalid response status'"
KNOWN_FAILURES: dict[tuple[str, str], str] = {
    ("aiohttp", "proxy-ws"): _ABSOLUTE_FORM,
    ("aiohttp-proxy-arg", "proxy-ws"): _ABSOLUTE_FORM,
    # aiohttp's trust_env drops https:// proxy URLs ("not supported") and goes
    # direct; given as proxy= the same proxy works.
    ("aiohttp", "https-proxy"): _NO_DNS,
    # python-websockets, websocket-client and aiohttp never read ALL_PROXY;
    # the adapters that hand a variable over read only http(s)_proxy, as
    # https-proxy-agent's README and aiohttp's proxy= example do.
    ("websockets-trio", "proxy-env-all"): _NO_DNS,
    ("websockets-asyncio", "proxy-env-all"): _NO_DNS,
    ("websocket-client", "proxy-env-all"): _NO_DNS,
    ("aiohttp", "proxy-env-all"): _NO_DNS,
    ("aiohttp-proxy-arg", "proxy-env-all"): _NO_DNS,
    ("node-ws", "proxy-env-all"): "ENOTFOUND",
    # websocket-client speaks plain HTTP to an https:// proxy.
    ("websocket-client", "https-proxy"): "WebSocketProxyException",
    # Basic only: a Digest challenge is a final 407.
    ("websockets-trio", "auth-digest"): "407",
    ("websockets-asyncio", "auth-digest"): "407",
    ("websocket-client", "auth-digest"): "407",
    ("aiohttp", "auth-digest"): "407, message='Proxy Authentication Required'",
    ("aiohttp-proxy-arg", "auth-digest"): "407, message='Proxy Authentication Required'",
    ("node-ws", "auth-digest"): "Unexpected server response: 407",
    ("node-proxy-agent", "auth-digest"): "Unexpected server response: 407",
    # Chromium answers no proxy challenge for a WebSocket: credentials given
    # through playwright reach page loads, not the WebSocket's CONNECT.
    ("chromium", "auth-basic"): "Proxy authentication failed",
    ("chromium", "auth-digest"): "Proxy authentication failed",
    # A correct client refuses the interception CA it does not trust.
    ("websockets-trio", "tls-intercept-untrusted"): "BrokenResourceError",  # no TLS detail
    ("websockets-asyncio", "tls-intercept-untrusted"): "CERTIFICATE_VERIFY_FAILED",
    ("websocket-client", "tls-intercept-untrusted"): "CERTIFICATE_VERIFY_FAILED",
    ("aiohttp", "tls-intercept-untrusted"): "CERTIFICATE_VERIFY_FAILED",
    ("aiohttp-proxy-arg", "tls-intercept-untrusted"): "CERTIFICATE_VERIFY_FAILED",
    ("node-ws", "tls-intercept-untrusted"): "unable to verify",
    ("node-proxy-agent", "tls-intercept-untrusted"): "unable to verify",
    ("tunnelws", "tls-intercept-untrusted"): "could not be verified",
    ("chromium", "tls-intercept-untrusted"): "ERR_CERT_AUTHORITY_INVALID",
}


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str


async def run_adapter(
    adapter: Adapter, network: CorporateNetwork, message: str, **extra: str
) -> Outcome:
    env = client_environment(os.environ, network)
    env.update(TUNNELWS_MESSAGE=message, PATH=f"{VENV_BIN}:{env.get('PATH', '')}", **extra)
    with trio.fail_after(60):  # the adapters' own deadlines are 20 s + idle
        result = await trio.run_process(
            adapter.argv(), env=env, capture_stdout=True, capture_stderr=True, check=False
        )
    return Outcome(result.returncode, result.stdout.decode(), result.stderr.decode())


def _origin_target(network: CorporateNetwork) -> str:
    return network.url.split("://", 1)[1].split("/", 1)[0]


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("name", sorted(ALL))
async def test_adapter_through_the_proxy(name: str, scenario: str) -> None:
    adapter = ALL[name]
    adapter.argv()  # skip early when a binary is missing
    async with open_network(scenario) as network:
        outcome = await run_adapter(adapter, network, f"via {scenario}")
        assert network.proxy is not None
        tunnels = network.proxy.stats.targets[_origin_target(network)]
    known = KNOWN_FAILURES.get((name, scenario))
    if known is None:
        assert (outcome.returncode, outcome.stdout) == (0, f"via {scenario}\n"), outcome
        # One tunnel to the origin (Digest: after one 407), never more.
        assert tunnels == 1
    else:
        assert outcome.returncode != 0, outcome
        assert outcome.stdout == ""
        assert known in outcome.stderr, outcome
        assert tunnels <= 1  # no silent retry (say, without verification)
        # The adapter's report is the last line (libraries may log before it).
        assert outcome.stderr.splitlines()[-1].startswith(f"{name}:"), outcome


def assert_known_failure(name: str, scenario: str, outcome: Outcome) -> None:
    """The library's known failure, with its known reason."""
    assert outcome.returncode != 0, outcome
    assert KNOWN_FAILURES[(name, scenario)] in outcome.stderr, outcome


@pytest.mark.parametrize("name", sorted(ALL))
async def test_adapter_sends_again_after_idle(name: str) -> None:
    adapter = ALL[name]
    adapter.argv()
    async with open_network("proxy-ws") as network:
        outcome = await run_adapter(adapter, network, "twice", TUNNELWS_IDLE="0.5")
    if (name, "proxy-ws") in KNOWN_FAILURES:
        assert_known_failure(name, "proxy-ws", outcome)
    else:
        assert (outcome.returncode, outcome.stdout) == (0, "twice\ntwice\n"), outcome


@pytest.mark.parametrize("name", ["aiohttp", "aiohttp-proxy-arg"])
async def test_aiohttp_sends_ws_as_an_absolute_form_get(name: str) -> None:
    """aiohttp does not tunnel ``ws://``, whether it reads ``ws_proxy`` itself or
    gets ``proxy=``: it asks the proxy for ``GET ws://...``, which the companion
    proxy counts and refuses with 400."""
    async with open_network("proxy-ws") as network:
        outcome = await run_adapter(ALL[name], network, "absolute")
        assert network.proxy is not None
        assert network.proxy.stats.absolute_form == 1
        assert network.proxy.stats.connects == 0
    assert_known_failure(name, "proxy-ws", outcome)


async def test_adapters_say_what_they_translated() -> None:
    """Where an adapter hands a variable to the library as its own option it
    says so (without the value: it may hold a password); where the library
    reads the environment itself it says nothing."""
    async with open_network("auth-basic") as network:
        for name, said in (
            ("aiohttp-proxy-arg", "translated: https_proxy -> ws_connect(proxy=...)"),
            ("node-ws", "translated: https_proxy -> new HttpsProxyAgent(...)"),
            ("aiohttp", None),
            ("node-proxy-agent", None),
            ("websocket-client", None),
        ):
            outcome = await run_adapter(ALL[name], network, "said")
            assert outcome.returncode == 0, outcome
            lines = outcome.stderr.splitlines()
            assert lines == ([f"{name}: {said}"] if said else []), outcome
            assert PROXY_PASSWORD not in outcome.stderr


async def test_adapters_report_failures_on_stderr() -> None:
    """A refusing proxy: every Python adapter exits 1 with its library's error."""
    async with open_network("proxy-error-html") as network:
        for name in ("websockets-trio", "websockets-asyncio", "websocket-client"):
            outcome = await run_adapter(ALL[name], network, "refused")
            assert outcome.returncode == 1, outcome
            assert outcome.stdout == ""
            assert outcome.stderr.splitlines()[-1].startswith(f"{name}: "), outcome
            assert "502" in outcome.stderr, outcome
        assert ORIGIN_HOST in _origin_target(network)


@pytest.mark.parametrize("name", sorted(ALL))
async def test_adapter_sends_the_repeated_message(name: str) -> None:
    """TUNNELWS_MESSAGE_REPEAT=N: the message is TUNNELWS_MESSAGE N times over
    (the harness's 256 KiB message does not fit one environment variable)."""
    adapter = ALL[name]
    adapter.argv()
    async with open_network("proxy-ws") as network:
        outcome = await run_adapter(adapter, network, "abc-", TUNNELWS_MESSAGE_REPEAT="3")
    if (name, "proxy-ws") in KNOWN_FAILURES:
        assert_known_failure(name, "proxy-ws", outcome)
    else:
        assert (outcome.returncode, outcome.stdout) == (0, "abc-abc-abc-\n"), outcome


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize(
    ("variable", "value"),
    [("TUNNELWS_MESSAGE_REPEAT", "0"), ("TUNNELWS_MESSAGE_REPEAT", "many")],
)
async def test_adapter_rejects_a_bad_contract_variable(
    name: str, variable: str, value: str
) -> None:
    env = {**os.environ, "TUNNELWS_URL": "ws://127.0.0.1:9/echo", variable: value}
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    with trio.fail_after(30):
        result = await trio.run_process(
            ALL[name].argv(), env=env, capture_stdout=True, capture_stderr=True, check=False
        )
    assert result.returncode != 0 and result.stdout == b""
    assert variable in result.stderr.decode().splitlines()[-1], result.stderr


@pytest.mark.parametrize("name", sorted(ALL))
async def test_adapter_idles_while_listening(name: str) -> None:
    """The tunnel is reset 1 s after it opened, during a 6 s idle wait: an adapter
    that listens while idle (as the harness's contract asks) exits at once, not
    when it next sends."""
    adapter = ALL[name]
    adapter.argv()
    async with open_network("tunnel-reset") as network:
        begin = trio.current_time()
        outcome = await run_adapter(adapter, network, "reset", TUNNELWS_IDLE="6")
        elapsed = trio.current_time() - begin
    if outcome.stdout == "" and (name, "proxy-ws") in KNOWN_FAILURES:
        assert_known_failure(name, "proxy-ws", outcome)  # it never got connected
        return
    assert outcome.returncode != 0 and outcome.stdout == "reset\n", outcome
    assert elapsed < 5, f"{name} noticed the reset only after {elapsed:.1f} s"
