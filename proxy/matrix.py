"""The compatibility matrix: tunnelws and third-party clients through the harness catalogue.

Runs ``tunnelws harness run`` once per client (tunnelws's built-in client, the
``tunnelws connect`` CLI and every adapter in ``proxy/adapters/``) into one
report directory, then writes ``docs/compatibility.md`` from its
``results.json``: the scenario × client table, and per client where it fails
and why, each explanation backed by that run's own artifacts (the adapter's
stderr, the proxy's and the origin's logs, the firewall's counters).

Run from the repository root, as root (network namespaces and nftables)::

    sudo .venv/bin/python proxy/matrix.py                      # all clients, then the page
    sudo .venv/bin/python proxy/matrix.py --client aiohttp     # re-run one column
    .venv/bin/python proxy/matrix.py --render-only             # the page from an earlier run

The report directory (default ``build/compat``) also holds the harness's own
``report.html`` and ``junit.xml`` and every scenario's raw artifacts.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
ADAPTERS = Path("proxy/adapters")
DEFAULT_REPORT = Path("build/compat")
DEFAULT_OUTPUT = Path("docs/compatibility.md")

Result = dict[str, Any]


def _catalogue() -> dict[str, Any]:
    """The catalogue's scenarios by id (empty if the test network is missing)."""
    try:
        from tunnelws_testnet.harness import CATALOGUE
    except ImportError:
        return {}
    return {scenario.id: scenario for scenario in CATALOGUE}


SCENARIOS = _catalogue()
SCENARIO_NETWORKS = {sid: scenario.network for sid, scenario in SCENARIOS.items()}


# -- the clients ---------------------------------------------------------------


@dataclass(frozen=True)
class Client:
    """One column of the matrix: a command the harness runs per scenario."""

    name: str
    library: str  # what is measured, in words
    command: tuple[str, ...]  # relative to the repository root; () = the built-in client
    exit_codes: bool = False  # the command exits with tunnelws's codes
    # It has tunnelws's HTTP fallback: judged on the scenarios' fallback
    # expectations where they have one (the harness's ``--fallback``).
    fallback: bool = False
    # Run through `tunnelws local-proxy` (the harness's ``--through-local-proxy``):
    # the library gets only http_proxy/https_proxy pointing at it.
    through_local_proxy: bool = False
    # Upper bound for the whole catalogue (the harness bounds each scenario).
    budget: float = 600.0
    missing: Callable[[], str | None] = field(default=lambda: None, compare=False)


def _needs_module(name: str) -> Callable[[], str | None]:
    def check() -> str | None:
        return None if importlib.util.find_spec(name) else f"Python package {name} is missing"

    return check


def _needs_node() -> str | None:
    if shutil.which("node") is None:
        return "node is missing"
    if not (ROOT / ADAPTERS / "node_ws" / "node_modules" / "ws").is_dir():
        return "run `npm ci` in proxy/adapters/node_ws"
    return None


def _needs_chromium() -> str | None:
    chromium = os.environ.get("TUNNELWS_CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).exists():
        return f"{chromium} is missing"
    if shutil.which("certutil") is None:
        return "certutil (libnss3-tools) is missing"
    return _needs_module("playwright")()


#: The name of a column run through the local proxy: its library's column + this.
LOCAL_PROXY_SUFFIX = "+local-proxy"
#: The libraries also run through `tunnelws local-proxy`: the ones that read
#: http(s)_proxy and the ones that do not (what the local proxy cannot fix).
THROUGH_LOCAL_PROXY = (
    "websockets-asyncio",
    "websocket-client",
    "aiohttp",
    "node-ws",
    "node-proxy-agent",
)


def base_column(name: str) -> str:
    """The library's own column for a local-proxy column's name (else the name)."""
    return name.removesuffix(LOCAL_PROXY_SUFFIX)


def _through_local_proxy(client: Client) -> Client:
    return dataclasses.replace(
        client,
        name=client.name + LOCAL_PROXY_SUFFIX,
        library=f"{client.library}, given only `http_proxy`/`https_proxy` pointing at "
        "`tunnelws local-proxy` (which has the scenario's route, at its defaults)",
        through_local_proxy=True,
    )


def clients(python: str = sys.executable) -> tuple[Client, ...]:
    """Every column of the matrix, tunnelws first, the local-proxy columns
    last: one entry each."""
    own = _own_columns(python)
    by_name = {client.name: client for client in own}
    return (*own, *(_through_local_proxy(by_name[name]) for name in THROUGH_LOCAL_PROXY))


def _own_columns(python: str) -> tuple[Client, ...]:
    adapter = str(ADAPTERS)
    tunnelws_bin = str(Path(python).parent / "tunnelws")
    return (
        Client(
            "tunnelws",
            "`tunnelws.open_websocket` with its defaults (the harness's built-in client)",
            (),
            fallback=True,
        ),
        Client(
            "tunnelws-cli",
            "`tunnelws connect` with its defaults",
            ("env", f"TUNNELWS_BIN={tunnelws_bin}", "sh", f"{adapter}/tunnelws_cli.sh"),
            exit_codes=True,
            fallback=True,
        ),
        Client(
            "websockets-asyncio",
            "python-websockets, asyncio client, proxy from the environment (its default)",
            (python, f"{adapter}/python_websockets_asyncio.py"),
            missing=_needs_module("websockets"),
        ),
        Client(
            "websockets-trio",
            "python-websockets, trio client, `proxy=True` (the environment)",
            (python, f"{adapter}/python_websockets_trio.py"),
            missing=_needs_module("websockets"),
        ),
        Client(
            "websocket-client",
            "websocket-client (synchronous), proxy from the environment; a SOCKS proxy "
            "as its `proxy_type` options",
            (python, f"{adapter}/websocket_client.py"),
            missing=_needs_module("websocket"),
        ),
        Client(
            "aiohttp",
            "aiohttp `ws_connect` in a `ClientSession(trust_env=True)`",
            (python, f"{adapter}/aiohttp_client.py"),
            missing=_needs_module("aiohttp"),
        ),
        Client(
            "aiohttp-proxy-arg",
            "aiohttp `ws_connect(url, proxy=...)`, the proxy URL from `https_proxy`/`http_proxy`",
            (python, f"{adapter}/aiohttp_client.py", "--proxy-argument"),
            missing=_needs_module("aiohttp"),
        ),
        Client(
            "node-ws",
            "Node `ws` with `new HttpsProxyAgent(https_proxy)` (what most `ws` users write)",
            ("node", f"{adapter}/node_ws/client.mjs", "https-proxy-agent"),
            missing=_needs_node,
        ),
        Client(
            "node-proxy-agent",
            "Node `ws` with `new ProxyAgent()` (`proxy-agent`: the environment through "
            "proxy-from-env)",
            ("node", f"{adapter}/node_ws/client.mjs", "proxy-agent"),
            missing=_needs_node,
        ),
        Client(
            "chromium",
            "headless chromium with its own proxy flags (`--proxy-server`, "
            "`--proxy-pac-url`, ...), via playwright",
            (python, f"{adapter}/chromium.py"),
            budget=1800.0,
            missing=_needs_chromium,
        ),
    )


def client_spec(client: Client, root: Path = ROOT) -> Any:
    """The harness's :class:`ClientSpec` for a column, with absolute paths
    (the built-in client when the command is empty)."""
    from tunnelws_testnet.harness import ClientSpec, builtin_client

    if not client.command:
        return builtin_client(client.name)
    argv = tuple(
        str(root / part) if part.startswith(f"{ADAPTERS}/") else part for part in client.command
    )
    return ClientSpec(
        client.name,
        argv,
        exit_codes=client.exit_codes,
        fallback=client.fallback,
        through_local_proxy=client.through_local_proxy,
    )


def harness_command(
    client: Client, report: Path, python: str = sys.executable, scenarios: Sequence[str] = ()
) -> list[str]:
    """The ``tunnelws harness run`` command line for one client."""
    command = [python, "-m", "tunnelws", "harness", "run", "--report", str(report)]
    command += ["--name", client.name]
    for scenario in scenarios:
        command += ["--scenario", scenario]
    if client.command:
        command += ["--exit-codes"] if client.exit_codes else []
        command += ["--fallback"] if client.fallback else []
        command += ["--through-local-proxy"] if client.through_local_proxy else []
        command += ["--", *client.command]
    return command


def run_client(client: Client, report: Path, scenarios: Sequence[str] = ()) -> str | None:
    """Run the catalogue (or ``scenarios``) for one client; None, or why it
    did not complete."""
    missing = client.missing()
    if missing:
        return f"not run: {missing}"
    command = harness_command(client, report, scenarios=scenarios)
    print(f"matrix: {shlex.join(command)}", flush=True)
    # The harness tears its namespaces down on SIGTERM; give it a moment to.
    process = subprocess.Popen(command, cwd=ROOT, start_new_session=True)
    try:
        process.wait(timeout=client.budget)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return f"stopped after its {client.budget:g} s budget"
    # Exit 1 only means some scenario was wrong: that is what we measure.
    if process.returncode not in (0, 1):
        return f"the harness exited with status {process.returncode}"
    return None


# -- reading a result ----------------------------------------------------------

_PER_SCHEME = ("http_proxy", "https_proxy", "ws_proxy", "wss_proxy")
PROXY_VARIABLES = (
    *_PER_SCHEME,
    *(name.upper() for name in _PER_SCHEME),
    "ALL_PROXY",
    "all_proxy",
)

# What a third-party library's error message says, for the matrix cell. The
# full message is quoted in the client's section; this is only a label.
ERROR_LABELS: tuple[tuple[str, str], ...] = (
    (r"\b407\b|Proxy Authentication Required|Proxy authentication failed|ERR_PROXY_AUTH", "407"),
    (r"\b403\b", "403"),
    (r"\b502\b", "502"),
    (
        r"CERTIFICATE_VERIFY_FAILED|certificate verify failed|ERR_CERT|unable to verify"
        r"|does not match certificate",
        "tls",
    ),
    (
        r"Name or service not known|getaddrinfo|ENOTFOUND|EAI_AGAIN|name resolution"
        r"|ERR_NAME_NOT_RESOLVED|No address associated",
        "dns",
    ),
    (r"not supported|isn't supported|unsupported|NO_SUPPORTED_PROXIES", "unsupported"),
    (r"InvalidURL|Invalid URL", "bad proxy URL"),
    (r"ERR_SOCKS_CONNECTION_FAILED", "socks"),
    (r"Server disconnected|Proxy connection ended", "closed"),
    (r"ERR_PROXY_CONNECTION_FAILED", "proxy unreachable"),
    (r"timed? ?out|TimeoutError|ETIMEDOUT|ERR_TIMED_OUT", "timeout"),
    (r"ECONNREFUSED|Connection refused|ERR_CONNECTION_REFUSED", "refused"),
    (r"ECONNRESET|Connection reset|ERR_CONNECTION_RESET", "reset"),
    (
        r"ConnectionClosed|closed before|connection (?:is already )?closed|closed \d{4}|was lost",
        "closed",
    ),
)


# An adapter's report that it passed a setting as the library's own option
# (proxy/adapters/_contract.py translated(), and the Node adapter).
TRANSLATED = re.compile(r"^[\w.-]+: translated: (.+)$")


def translations(result: Result) -> list[str]:
    """What the adapter translated in this run (e.g. ``http_proxy -> --proxy-server``)."""
    lines = (result.get("stderr") or "").splitlines()
    return [m.group(1) for m in map(TRANSLATED.match, lines) if m]


def last_error(result: Result) -> str:
    """The adapter's last stderr line: the library's own error."""
    lines = [
        line.strip()
        for line in (result.get("stderr") or "").splitlines()
        if line.strip() and not TRANSLATED.match(line)
    ]
    return lines[-1] if lines else ""


def error_label(text: str) -> str | None:
    """A short label for a library's error message: an HTTP status, or a kind."""
    status = re.search(r"\b(?:status(?: code)?|HTTP(?:/1\.[01])?|response)[: ]+([1-5]\d\d)\b", text)
    if status:
        return status.group(1)
    for pattern, label in ERROR_LABELS:
        if re.search(pattern, text, re.IGNORECASE):
            return label
    return None


def proxy_variables(result: Result) -> list[str]:
    env = result.get("env") or {}
    return [name for name in PROXY_VARIABLES if env.get(name)]


def proxy_requests(result: Result) -> list[dict[str, Any]]:
    return list((result.get("observation") or {}).get("proxy_requests") or [])


def counter(result: Result, name: str) -> int:
    return int((result.get("observation") or {}).get(name) or 0)


def proxy_log_events(result: Result) -> list[dict[str, Any]]:
    from tunnelws_testnet.peers import json_records

    return json_records("\n".join(result.get("proxy_log") or []))


def _is_origin(target: str, result: Result) -> bool:
    """Whether a proxy request's target (``host:port`` or an absolute URL) is the origin."""
    origin = urlsplit(str(result.get("url", "")))
    if target.startswith("/"):  # origin-form: a transparent proxy's view of the origin
        return True
    if "://" in target:
        return urlsplit(target).hostname == origin.hostname
    host = target.rsplit(":", 1)[0].strip("[]")
    return host == origin.hostname


def origin_requests(result: Result) -> list[dict[str, Any]]:
    """What the proxy saw for the origin (a browser also sends its own requests)."""
    return [r for r in proxy_requests(result) if _is_origin(str(r.get("target")), result)]


def _background_reason(reason: str, result: Result) -> bool:
    """Whether a harness reason is explained by requests to other hosts alone."""
    name = reason.split(":")[0]
    if name in background_flags(result):
        return True
    return reason.startswith("no_proxy should") and not origin_requests(result)


def background_flags(result: Result) -> set[str]:
    """The flags raised only by requests to hosts other than the origin (a browser's
    own update and sign-in traffic), not by the connection under test."""
    requests = proxy_requests(result)
    found = set()
    flags = set(result.get("flags") or [])
    absolute = [r for r in requests if r.get("method") != "CONNECT"]
    if "absolute-form" in flags and not any(
        _is_origin(str(r.get("target")), result) for r in absolute
    ):
        found.add("absolute-form")
    origin_connects = [
        r
        for r in requests
        if r.get("method") == "CONNECT" and _is_origin(str(r.get("target")), result)
    ]
    if "auth-loop" in flags and len(origin_connects) <= 2:
        found.add("auth-loop")
    return found


def background_hosts(result: Result) -> list[str]:
    """The other hosts, when they alone made a result wrong."""
    reasons = result.get("reasons") or []
    if result["verdict"] != "wrong" or not reasons:
        return []
    if not all(_background_reason(r, result) for r in reasons):
        return []
    targets = [
        str(r.get("target"))
        for r in proxy_requests(result)
        if not _is_origin(str(r.get("target")), result)
    ]
    return sorted(
        {(urlsplit(t).hostname if "://" in t else t.rsplit(":", 1)[0]) or t for t in targets}
    )


TRANSLATED_MARK = "†"


def cell(result: Result | None) -> str:
    """One matrix cell: ✔, – (skipped), ✘ with the flag or failure label;
    † when the adapter translated a setting into the library's own option."""
    if result is None:
        return " "
    verdict = result["verdict"]
    mark = f" {TRANSLATED_MARK}" if translations(result) else ""
    if verdict == "correct":
        return "✔" + mark
    if verdict == "skipped":
        return "–"
    if verdict == "error":
        return "⚠ error"
    if background_hosts(result):
        return "✘ background*" + mark
    return f"✘ {failure_label(result)}" + mark


def extension_of(result: Result) -> str | None:
    """The tunnelws convention a result's scenario tests (None: standard)."""
    if "extension" in result:
        return result["extension"] or None
    scenario = SCENARIOS.get(str(result["scenario"]))
    return None if scenario is None or scenario.extension is None else scenario.extension.value


def scores(results: Sequence[Result]) -> dict[str, tuple[int, int]]:
    """(correct, run) per score, "standard" and "extension"; skipped ones do not count."""
    totals = {"standard": [0, 0], "extension": [0, 0]}
    for result in results:
        if result["verdict"] == "skipped":
            continue
        total = totals["extension" if extension_of(result) else "standard"]
        total[0] += result["verdict"] == "correct"
        total[1] += 1
    return {name: (correct, run) for name, (correct, run) in totals.items()}


def failure_label(result: Result) -> str:
    own_flags = [f for f in result.get("flags") or [] if f not in background_flags(result)]
    if own_flags:
        return ", ".join(own_flags)
    if result.get("timed_out"):
        return "hang"
    expect = result["expect"]
    code = result.get("exit_code")
    if expect != "pass" and code == 0:
        return "passed"
    reasons = result.get("reasons") or []
    if any(r.startswith("no_proxy should") for r in reasons) and origin_requests(result):
        return "used proxy"
    if any(r.startswith("proxy should have seen") for r in reasons):
        return "CONNECT target"
    if result.get("category"):
        return str(result["category"])
    if expect == "pass" and code == 0:
        return "no echo"
    return error_label(last_error(result)) or f"exit {code}"


# -- why it failed: explanations checked against the artifacts -------------------


@dataclass(frozen=True)
class Evidence:
    """One wrong result and where its raw artifacts are."""

    client: str
    result: Result
    artifacts: Path  # REPORT/artifacts/CLIENT/SCENARIO

    @property
    def scenario(self) -> str:
        return str(self.result["scenario"])

    def artifact(self, name: str) -> str:
        try:
            return (self.artifacts / name).read_text(errors="replace")
        except OSError:
            return ""


#: (headline, detail): results with the same headline make one bullet, the
#: detail (if any) says how it showed in each scenario.
Explanation = tuple[str, str]
Explainer = Callable[[Evidence], Explanation | None]


def _variables_in_words(result: Result) -> str:
    """The proxy variables set, e.g. `http_proxy`/`https_proxy` (https://)."""
    env = result.get("env") or {}
    names = set(proxy_variables(result))
    if {"http_proxy", "HTTP_PROXY"} <= names or {"https_proxy", "HTTPS_PROXY"} <= names:
        shown = "`http(s)_proxy`/`ws(s)_proxy` (either case)"
    elif names & {"HTTP_PROXY", "HTTPS_PROXY"}:
        shown = "`HTTP(S)_PROXY`/`WS(S)_PROXY`"
    else:
        shown = " and ".join(f"`{name}`" for name in sorted(names))
    schemes = sorted({str(env[n]).split("://", 1)[0] for n in names if "://" in str(env[n])})
    unusual = [s for s in schemes if s != "http"]
    return shown + (f" (`{'`, `'.join(unusual)}` proxy URL)" if unusual else "")


def _harness_error(evidence: Evidence) -> Explanation | None:
    if evidence.result["verdict"] != "error":
        return None
    reasons = evidence.result.get("reasons") or ["no reason recorded"]
    first = str(reasons[0]).splitlines()[0].removeprefix("harness could not build the network: ")
    return ("not measured: the harness could not build the network", _clip(first, 100))


def _pac(evidence: Evidence) -> Explanation | None:
    result = evidence.result
    env = result.get("env") or {}
    pac = [str(env[v]) for v in proxy_variables(result) if str(env[v]).startswith("pac+")]
    if not pac or origin_requests(result):
        return None
    headline = "takes no PAC file from `pac+…` in the proxy variables: it never reached the proxy"
    if any("pac" in what for what in translations(result)):
        headline = "given the PAC file its own way (translated), it still never reached the proxy"
    server_log = evidence.artifact("pac-server.out")
    if re.search(r'"CONNECT ', server_log):
        return (
            headline,
            "it sent its CONNECT to the PAC web server itself, as if it were the proxy",
        )
    if counter(result, "direct_attempts"):
        return (headline, "it connected to the origin directly")
    return (headline, "it refused the proxy URL")


def _no_proxy(evidence: Evidence) -> Explanation | None:
    result = evidence.result
    if not any(r.startswith("no_proxy should") for r in result.get("reasons") or []):
        return None
    if not origin_requests(result):
        return None
    env = result.get("env") or {}
    value = env.get("no_proxy") or env.get("NO_PROXY")
    return (f"does not apply `no_proxy={value}`: it went through the proxy instead", "")


def _ignored_proxy(evidence: Evidence) -> Explanation | None:
    result = evidence.result
    dns, direct = counter(result, "dns_queries"), counter(result, "direct_attempts")
    if not proxy_variables(result) or origin_requests(result) or not (dns or direct):
        return None
    if result.get("local_proxy_log"):
        return None  # it used the local proxy it was given; the local proxy went direct
    headline = f"ignores the proxy in {_variables_in_words(result)}; the proxy saw no request"
    if dns:
        return (headline, "it looked the origin's name up in DNS itself")
    return (headline, "it connected to the origin directly")


def _absolute_form(evidence: Evidence) -> Explanation | None:
    result = evidence.result
    if "absolute-form" not in (result.get("flags") or []) or (
        "absolute-form" in background_flags(result)
    ):
        return None
    return (
        "asks the proxy for `GET ws://…` (absolute form) instead of a CONNECT tunnel, which "
        "the proxy refuses (400): every `ws://` scenario through the proxy",
        "",
    )


# Node's and OpenSSL's words for a certificate checked against the wrong name.
_NAME_MISMATCH = re.compile(
    r"Host: (?P<host>[^ ]+?)\.? is not in the cert's altnames|Cert does not contain a DNS name"
)


def _certificate_name(evidence: Evidence) -> Explanation | None:
    found = _NAME_MISMATCH.search(last_error(evidence.result))
    if not found or evidence.result["expect"] != "pass":
        return None
    origin = urlsplit(str(evidence.result.get("url", ""))).hostname
    checked = found.group("host") or "a host name"
    return (
        f"checks the origin's TLS certificate against the wrong name ({checked}, not the "
        f"origin's `{origin}`), so a correct certificate fails",
        _clip(last_error(evidence.result), 140),
    )


def _socks_without_credentials(evidence: Evidence) -> Explanation | None:
    said = "Unauthorized SOCKS"  # pproxy's log line for a client without the password
    if not any(said in line for line in evidence.result.get("proxy_log") or []):
        return None
    return (f"gives the SOCKS proxy no credentials: the server logged `{said}`", "")


def _http_to_socks(evidence: Evidence) -> Explanation | None:
    result = evidence.result
    scheme = [str(v) for v in (result.get("env") or {}).values() if str(v).startswith("socks")]
    said = "Unsupported protocol"  # pproxy's log line for bytes that are not SOCKS
    if not scheme or not any(said in line for line in result.get("proxy_log") or []):
        return None
    return (
        "speaks HTTP to the SOCKS proxy in the proxy variables (`socks5h://…`): "
        f"the SOCKS server logged `{said}`",
        "",
    )


def _bare_ipv6(evidence: Evidence) -> Explanation | None:
    targets = [
        str(r.get("target"))
        for r in origin_requests(evidence.result)
        if r.get("method") == "CONNECT" and r.get("status") != 200
    ]
    bare = [t for t in targets if t.count(":") > 1 and not t.startswith("[")]
    if not bare:
        return None
    status = next(r.get("status") for r in origin_requests(evidence.result))
    return (
        f"writes an IPv6 CONNECT target without brackets (`CONNECT {bare[0]}`); "
        f"the proxy answers {status}",
        "",
    )


def _auth(evidence: Evidence) -> Explanation | None:
    result = evidence.result
    connects = [r for r in origin_requests(result) if r.get("method") == "CONNECT"]
    if not connects or result["expect"] != "pass" or any(r.get("status") == 200 for r in connects):
        return None
    if not all(r.get("status") == 407 for r in connects):
        return None
    events = [e for e in proxy_log_events(result) if e.get("status") == 407]
    scenario_spec = SCENARIOS.get(evidence.scenario)
    if scenario_spec is not None and scenario_spec.proxy and scenario_spec.proxy.kerberos:
        return (
            "no Negotiate (Kerberos) proxy authentication: with a ticket in its cache "
            "(`KRB5CCNAME`) it never answered the proxy's 407",
            "",
        )
    if not any(e.get("credentials") for e in events):
        return ("no proxy authentication: it never sent credentials, the 407 was final", "")
    details = sorted({str(e["detail"]) for e in events if e.get("detail")})
    scenario = evidence.scenario
    scheme = "NTLM" if "ntlm" in scenario else "Digest" if "digest" in scenario else "Basic"
    how = f"the proxy logged: {'; '.join(details)}" if details else ""
    return (f"no {scheme} proxy authentication: it sent credentials the proxy refused", how)


def _https_proxy(evidence: Evidence) -> Explanation | None:
    result = evidence.result
    env = result.get("env") or {}
    if not any(str(env.get(v, "")).startswith("https://") for v in proxy_variables(result)):
        return None
    if origin_requests(result) or counter(result, "direct_attempts") or result["expect"] != "pass":
        return None
    return ("gets no request through to an `https://` proxy (TLS to the proxy)", "")


# The catalogue ids these explainers are about (tests/test_catalogue.py checks them).
IDLE_SCENARIO = "idle-timeout"
RESET_SCENARIO = "tunnel-reset"


def _idle_limit() -> str:
    """The idle-timeout scenario's limit in seconds, from its proxy options."""
    scenario = SCENARIOS.get(IDLE_SCENARIO)
    options = list(scenario.proxy.options) if scenario is not None and scenario.proxy else []
    if "--idle-timeout" in options[:-1]:
        return options[options.index("--idle-timeout") + 1]
    return "its limit of"


def _idle(evidence: Evidence) -> Explanation | None:
    result = evidence.result
    if evidence.scenario != IDLE_SCENARIO or not (result.get("stdout") or "").strip():
        return None
    ended = [e.get("end") for e in proxy_log_events(result) if e.get("event") == "tunnel"]
    if "idle-timeout" not in ended:
        return None
    return (
        "sends no keepalive pings by default: the proxy closed the tunnel after "
        f"{_idle_limit()} idle seconds, so the connection was gone before the second message",
        "",
    )


def _reset(evidence: Evidence) -> Explanation | None:
    result = evidence.result
    if evidence.scenario != RESET_SCENARIO or not result.get("timed_out"):
        return None
    limit = f"{result.get('time_limit', 0):g} s"
    if last_error(result):
        return (f"reports the reset but is still running at the scenario's {limit} limit", "")
    return (
        f"does not notice a tunnel reset while idle: silent until the scenario's {limit} "
        "limit (it would find out only when it next sends)",
        "",
    )


def _closed_early(evidence: Evidence) -> Explanation | None:
    result = evidence.result
    found = re.search(r"no closing handshake from the server within (\S+ s)", last_error(result))
    if not found or result["expect"] != "pass":
        return None
    return (
        "closes before the echo is back: `tunnelws connect` starts the closing handshake "
        "when its stdin ends (the adapter ends it right after the message) and waits "
        f"{found.group(1)} for the server's close, less than this link needs for the echo",
        "",
    )


def _passed(evidence: Evidence) -> Explanation | None:
    result = evidence.result
    if result["expect"] == "pass" or result.get("exit_code") != 0 or result.get("timed_out"):
        return None
    network = SCENARIO_NETWORKS.get(evidence.scenario, "")
    shown = network if network and not network.startswith("same") else ""
    return (f"succeeds where a correct client stops with {result['expect']}", shown)


def _wrong_category(evidence: Evidence) -> Explanation | None:
    result = evidence.result
    reasons = [r for r in result.get("reasons") or [] if r.startswith("expected ")]
    if not reasons or result["expect"] != "pass" or result.get("timed_out"):
        return None
    error = last_error(result)
    return ("fails where a correct client passes", _clip(error, 140) if error else reasons[0])


def _timed_out(evidence: Evidence) -> Explanation | None:
    result = evidence.result
    if not result.get("timed_out"):
        return None
    return (f"still running at the scenario's limit (expected {result['expect']})", "")


def _background(evidence: Evidence) -> Explanation | None:
    hosts = background_hosts(evidence.result)
    if not hosts:
        return None
    flags = ", ".join(f"`{f}`" for f in evidence.result["flags"])
    return (
        "\\* its WebSocket behaved as a correct client's would (the outcome expected, through "
        "the proxy); the flags come from the browser's own requests through the proxy to "
        f"{', '.join(f'`{h}`' for h in hosts)}",
        f"flagged {flags}",
    )


def _local_proxy_unused(evidence: Evidence) -> Explanation | None:
    result = evidence.result
    if "local_proxy_log" not in result or not _never_used_local_proxy(result):
        return None
    return (
        "ignores `http_proxy`/`https_proxy` for a `ws(s)://` URL: `tunnelws local-proxy` saw "
        "no connection (nothing a local proxy can fix)",
        "it looked the origin's name up in DNS"
        if counter(result, "dns_queries")
        else "it connected to the origin directly",
    )


def _default_connect_timeout() -> float:
    from tunnelws import route_options

    return route_options().connect_timeout


# What `tunnelws local-proxy` runs with in the local-proxy columns: its default.
_LOCAL_PROXY_CONNECT_TIMEOUT = _default_connect_timeout()


def _local_proxy_slow_route(evidence: Evidence) -> Explanation | None:
    result = evidence.result
    if "local_proxy_log" not in result or not result.get("timed_out"):
        return None
    return (
        "still running at the scenario's limit: `tunnelws local-proxy` was still opening the "
        f"route (its connect timeout is {_LOCAL_PROXY_CONNECT_TIMEOUT:g} s) and the library "
        "set no time limit of its own on "
        f"the proxy's answer (expected {result['expect']})",
        "",
    )


def _local_proxy_answer(evidence: Evidence) -> Explanation | None:
    result = evidence.result
    failures = [e for e in result.get("local_proxy_log") or [] if e.get("error")]
    if not failures or result["expect"] != "pass":
        return None
    entry = failures[-1]
    return (
        f"`tunnelws local-proxy` answered the library's request with `{entry['error']}`",
        _clip(str(entry.get("message", "")), 120),
    )


EXPLAINERS: tuple[Explainer, ...] = (
    _harness_error,
    _local_proxy_unused,
    _local_proxy_slow_route,
    _local_proxy_answer,
    _background,
    _pac,
    _no_proxy,
    _ignored_proxy,
    _absolute_form,
    _http_to_socks,
    _socks_without_credentials,
    _certificate_name,
    _bare_ipv6,
    _auth,
    _https_proxy,
    _idle,
    _reset,
    _closed_early,
    _passed,
    _timed_out,
    _wrong_category,
)


def explain(evidence: Evidence) -> Explanation | None:
    """The first explanation the artifacts support, or None."""
    for explainer in EXPLAINERS:
        found = explainer(evidence)
        if found:
            return found
    return None


@dataclass(frozen=True)
class SourceNote:
    """Why, read in the library's own source; shown when the run shows the symptom."""

    client: str
    scenarios: frozenset[str]  # shown if any of these is wrong in the run
    text: str


_WEBSOCKETS_NOTES = (
    (
        frozenset({"proxy-env-all", "socks5h", "socks5h-microsocks"}),
        "`websockets/proxy.py` `get_proxy()` looks in `urllib.request.getproxies()` for "
        "`wss`/`ws`, `socks`, `https`, `http` only: `ALL_PROXY` (key `all`) is never read.",
    ),
    (
        frozenset({"no-proxy-cidr"}),
        "The bypass check is `urllib.request.proxy_bypass()`, which matches `no_proxy` "
        "entries as host-name suffixes: a CIDR never matches.",
    ),
    (
        frozenset({"proxy-huge-headers"}),
        "Its reply parser (`http11.py`) bounds each line (8192 bytes) and the number of "
        "headers (128), not the header block's total size, so an 80 KiB reply passes.",
    ),
)

# wss:// scenarios with an IP-literal origin behind an HTTP(S) proxy.
_IP_ORIGIN_WSS = (
    "proxy-wss",
    "https-proxy",
    "ports-443-only-wss",
    "tls-intercept-trusted",
    "pac-http-failover",
)
_HTTPS_PROXY_AGENT_NAME = (
    "For an IP-literal origin `https-proxy-agent` (also inside `proxy-agent`) calls "
    "`tls.connect()` with neither `servername` (`setServernameFromNonIpHost`: none for an "
    "IP) nor `host` (omitted), so Node checks the origin's certificate against `localhost`, "
    "as the error says: a correct certificate fails, and one for `localhost` would pass."
)
_NODE_TRUST = (
    "Node verifies with its own bundled CA list plus `NODE_EXTRA_CA_CERTS`, not the "
    "system's store in `/etc/ssl` (unless started with `--use-openssl-ca`)."
)
_WS_THROUGH_PROXY = (
    "proxy-ws",
    "auth-basic",
    "auth-negotiate",
    "proxy-http10",
    "idle-timeout",
)
_AIOHTTP_FORWARDS_WS = (
    "`TCPConnector._create_proxy_connection()` sends CONNECT only when `req.is_ssl()` "
    "(`https`, `wss`); a `ws://` request goes to the proxy as a forward request, "
    "`GET ws://…` with the upgrade headers."
)

SOURCE_NOTES = (
    *(
        SourceNote(client, scenarios, text)
        for client in ("websockets-asyncio", "websockets-trio")
        for scenarios, text in _WEBSOCKETS_NOTES
    ),
    SourceNote(
        "node-ws",
        frozenset({"proxy-env-all", "no-proxy-name", "no-proxy-cidr", "pac-failover"}),
        "Neither `ws` nor `https-proxy-agent` reads proxy variables: the adapter hands "
        "`https_proxy`/`http_proxy` to `HttpsProxyAgent` as its README shows, so "
        "`ALL_PROXY` and `no_proxy` are never consulted.",
    ),
    *(
        SourceNote(client, frozenset(_IP_ORIGIN_WSS), _HTTPS_PROXY_AGENT_NAME)
        for client in ("node-ws", "node-proxy-agent")
    ),
    *(
        SourceNote(client, frozenset({"tls-intercept-system-store"}), _NODE_TRUST)
        for client in ("node-ws", "node-proxy-agent")
    ),
    SourceNote(
        "node-proxy-agent",
        frozenset({"no-proxy-cidr"}),
        "proxy-from-env's `shouldProxy()` matches `no_proxy` entries as names, suffixes "
        "(`.corp.test`, `*.corp.test`) and ports: a CIDR never matches.",
    ),
    SourceNote(
        "node-proxy-agent",
        frozenset({"pac-wpad"}),
        "`proxy-agent` knows the proxy URL schemes http, https, socks* and "
        "pac+data/file/ftp/http/https: `pac+wpad:` is none of them (no WPAD discovery).",
    ),
    *(
        SourceNote(client, frozenset(_WS_THROUGH_PROXY), _AIOHTTP_FORWARDS_WS)
        for client in ("aiohttp", "aiohttp-proxy-arg")
    ),
    SourceNote(
        "aiohttp",
        frozenset({"proxy-env-all", "https-proxy", "socks5h-proxy-variables"}),
        "With `trust_env` aiohttp reads `helpers.proxies_from_env()`: only the `http`, "
        "`https`, `ws` and `wss` keys of `urllib.request.getproxies()` (never `ALL_PROXY`), "
        "picked by the URL's scheme; it drops `https://` proxy URLs with a warning "
        '("HTTPS proxies … are not supported, ignoring") and has no SOCKS client, so a '
        "`socks5h://` URL is spoken to as an HTTP proxy.",
    ),
    SourceNote(
        "aiohttp-proxy-arg",
        frozenset({"no-proxy-name", "no-proxy-cidr"}),
        "`ClientSession._request()` uses a `proxy=` as given for every URL; `no_proxy` "
        "(`proxy_bypass`) applies only to proxies it reads from the environment.",
    ),
    SourceNote(
        "chromium",
        frozenset({"auth-basic", "auth-407-close", "auth-digest", "auth-ntlm"}),
        "Chromium takes no proxy credentials on its command line, and headless it has no "
        "dialog to ask; playwright's `username`/`password` answer challenges for page loads, "
        "not for a WebSocket's CONNECT. Negotiate needs no password: with the Kerberos "
        "ticket in `KRB5CCNAME` chromium passes auth-negotiate.",
    ),
    SourceNote(
        "chromium",
        frozenset({"socks5h", "socks5h-microsocks", "socks5h-proxy-variables"}),
        "Chromium's SOCKS5 client has no user name and password authentication "
        "(RFC 1929), and these SOCKS servers demand it.",
    ),
    SourceNote(
        "chromium",
        frozenset({"pac-failover"}),
        "Given `--proxy-pac-url=file://…`, chromium did not use the PAC file and went "
        "direct; over `http://` (pac-http-failover) and by WPAD (`--proxy-auto-detect`, "
        "pac-wpad) it follows the same PAC file correctly.",
    ),
    SourceNote(
        "chromium",
        frozenset({"tls-intercept-system-store"}),
        "On Linux chromium trusts its own root store plus the NSS database "
        "(`~/.pki/nssdb`, where the adapter installs the CA bundle of the other scenarios), "
        "not `/etc/ssl`.",
    ),
    SourceNote(
        "chromium",
        frozenset({"blocked-blackhole", "proxy-silent"}),
        "The page's `new WebSocket(url)` takes no timeout (the adapter has none to pass), "
        "and chromium waits longer than the scenario's 10 s limit.",
    ),
    SourceNote(
        "websocket-client",
        frozenset({"https-proxy"}),
        "`websocket/_http.py` `_tunnel()` writes `CONNECT host:port` on the plain TCP "
        "socket: no TLS to an `https://` proxy.",
    ),
    SourceNote(
        "websocket-client",
        frozenset({"proxy-ipv6-target"}),
        '`_tunnel()` formats the target as `f"{host}:{port}"`, without brackets for IPv6.',
    ),
    SourceNote(
        "websocket-client",
        frozenset({"auth-digest", "auth-ntlm"}),
        "`_tunnel()` only ever adds `Proxy-Authorization: Basic` (a `TODO: support digest "
        "auth` sits there) and reads a single reply: any 407 is final.",
    ),
)


def network_summary(result: Result) -> str:
    parts = []
    seen = origin_requests(result)
    others = len(proxy_requests(result)) - len(seen)
    if seen:
        shown = [
            f"{r.get('method')} {r.get('target')}"
            + (f" → {r['status']}" if r.get("status") is not None else "")
            for r in seen[:3]
        ]
        parts.append("proxy saw " + ", ".join(shown) + (" …" if len(seen) > 3 else ""))
    elif proxy_variables(result):
        parts.append("proxy saw nothing for the origin")
    if others:
        parts.append(f"{others} request(s) for other hosts")
    for name, label in (("dns_queries", "DNS queries"), ("direct_attempts", "direct attempts")):
        if counter(result, name):
            parts.append(f"{counter(result, name)} {label}")
    return "; ".join(parts) or "–"


# -- the page ------------------------------------------------------------------


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _clip(text: str, limit: int = 180) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _expected(result: Result) -> str:
    """The table's expected outcome: the catalogue's, both where a client with
    the HTTP fallback is expected to do otherwise (each cell is judged on the
    one that applies to its client)."""
    scenario = SCENARIOS.get(str(result["scenario"]))
    return str(result["expect"]) if scenario is None else str(scenario.expect_both)


def _conventions(ids: Sequence[str], results: dict[str, Result]) -> str:
    """ " *Extension: ….*" naming the tunnelws conventions of these scenarios."""
    named = sorted({e for e in (extension_of(results[i]) for i in ids) if e})
    if not named:
        return ""
    return f" *Extension{'s' if len(named) > 1 else ''}: {'; '.join(named)}.*"


def _explanations(client: str, wrong: list[Result], report: Path) -> list[str]:
    """The bullets of one client's section: grouped explanations (naming the
    convention of extension scenarios), then source notes."""
    by_id = {str(r["scenario"]): r for r in wrong}
    groups: dict[str, dict[str, list[str]]] = {}
    unexplained = []
    for result in wrong:
        evidence = Evidence(client, result, report / "artifacts" / client / result["scenario"])
        found = explain(evidence)
        if found is None:
            unexplained.append(result["scenario"])
            continue
        headline, detail = found
        groups.setdefault(headline, {}).setdefault(detail, []).append(result["scenario"])
    lines = []
    for headline, details in groups.items():
        ids = [sid for group in details.values() for sid in group]
        named = _conventions(ids, by_id)
        if list(details) == [""]:
            lines.append(f"- {headline} — {', '.join(details[''])}.{named}")
            continue
        parts = [
            ", ".join(ids) + (f" ({detail})" if detail else "") for detail, ids in details.items()
        ]
        lines.append(f"- {headline} — {'; '.join(parts)}.{named}")
    if unexplained:
        lines.append(
            f"- Also wrong in {', '.join(unexplained)}: see the table below."
            + _conventions(unexplained, by_id)
        )
    failing = {r["scenario"] for r in wrong}
    notes = [
        n.text for n in SOURCE_NOTES if n.client == base_column(client) and n.scenarios & failing
    ]
    if notes:
        lines += ["", "In the library's source:", ""] + [f"- {text}" for text in notes]
    return lines


def _score_text(score: tuple[int, int]) -> str:
    return f"{score[0]}/{score[1]}"


def _at_a_glance(
    runs: list[dict[str, Any]], by_client: dict[str, dict[str, Result]], scenarios: list[str]
) -> list[str]:
    """What the table shows, computed from it."""
    ours = [r["client"] for r in runs if r["client"].startswith("tunnelws")]
    helped = [r["client"] for r in runs if r["client"].endswith(LOCAL_PROXY_SUFFIX)]
    others = [r["client"] for r in runs if r["client"] not in (*ours, *helped)]
    lines = ["## What it shows", ""]
    for run in runs:
        counts = run["counts"]
        score = scores(run["results"])
        background = sum(1 for r in run["results"] if background_hosts(r))
        lines.append(
            f"- `{run['client']}`: {_score_text(score['standard'])} standard, "
            f"{_score_text(score['extension'])} extension"
            + (f", {counts['skipped']} skipped" if counts.get("skipped") else "")
            + (
                f"; {background} more are wrong only for the browser's background requests\\*"
                if background
                else ""
            )
            + "."
        )
    if others:

        def wrong_for_all(names: list[str], sid: str) -> bool:
            cells = [by_client[n].get(sid) for n in names]
            return all(
                c is not None and c["verdict"] == "wrong" and not background_hosts(c) for c in cells
            )

        none_pass = [sid for sid in scenarios if wrong_for_all(others, sid)]
        if none_pass:
            lines += [
                "",
                "No third-party client is correct in: " + ", ".join(none_pass) + ".",
            ]
    for name in ours:
        wrong = [r["scenario"] for r in by_client[name].values() if r["verdict"] != "correct"]
        if wrong:
            lines += ["", f"`{name}` is not correct in: {', '.join(wrong)} (see below)."]
    return [*lines, ""]


def _local_proxy_section(
    runs: list[dict[str, Any]], by_client: dict[str, dict[str, Result]], scenarios: list[str]
) -> list[str]:
    """Each local-proxy column against its library's own column: what changed."""
    pairs = [
        (r["client"], base_column(r["client"]))
        for r in runs
        if r["client"].endswith(LOCAL_PROXY_SUFFIX) and base_column(r["client"]) in by_client
    ]
    if not pairs:
        return []
    lines = [
        "## What `tunnelws local-proxy` fixes, and what it cannot",
        "",
        "The `…+local-proxy` columns run the same adapter with `tunnelws local-proxy` started "
        "in the client's namespace, at its defaults, with the scenario's environment (proxy "
        "variables, PAC, credentials, Kerberos ticket); the library itself gets only "
        "`http_proxy`/`https_proxy` (both cases) pointing at it, and the CA bundle "
        "(`tunnelws harness run --through-local-proxy`). The network judges the pair. "
        "Compared with the library's own column:",
        "",
    ]

    def verdict(name: str, sid: str) -> str | None:
        result = by_client[name].get(sid)
        return None if result is None else str(result["verdict"])

    for helped, base in pairs:
        fixed = [
            sid
            for sid in scenarios
            if verdict(base, sid) == "wrong" and verdict(helped, sid) == "correct"
        ]
        still = [sid for sid in scenarios if verdict(helped, sid) == "wrong"]
        broken = [sid for sid in still if verdict(base, sid) == "correct"]
        before, after = (
            scores(list(by_client[base].values())),
            scores(list(by_client[helped].values())),
        )
        text = (
            f"- `{base}`: {_score_text(before['standard'])} → "
            f"{_score_text(after['standard'])} standard, "
            f"{_score_text(before['extension'])} → {_score_text(after['extension'])} extension. "
        )
        text += f"Fixed: {', '.join(fixed)}. " if fixed else "Fixes nothing. "
        unused = [sid for sid in still if _never_used_local_proxy(by_client[helped][sid])]
        used_wrong = [sid for sid in still if sid not in unused]

        if unused:
            text += (
                f"Never talked to the local proxy in {len(unused)} scenarios: it went direct "
                "or asked DNS, taking no `http(s)_proxy` for `ws(s)://` URLs"
                f"{_newly_wrong(unused, broken)}. "
            )
        if used_wrong:
            text += f"Still wrong{' otherwise' if unused else ''}: {', '.join(used_wrong)}"
            text += _newly_wrong(used_wrong, broken) + "."
        elif not still:
            text += "Correct in every scenario."
        lines.append(text)
    return [*lines, ""]


def _newly_wrong(ids: list[str], broken: list[str]) -> str:
    found = [sid for sid in ids if sid in broken]
    return f" (newly wrong: {', '.join(found)})" if found else ""


def _never_used_local_proxy(result: Result) -> bool:
    """Through the local proxy, yet it saw nothing: the library went its own way."""
    return not result.get("local_proxy_log") and bool(
        counter(result, "direct_attempts") or counter(result, "dns_queries")
    )


def _conventions_section(scenarios: list[Result]) -> list[str]:
    """The extension scenarios, grouped by the tunnelws convention they test."""
    by_convention: dict[str, list[str]] = {}
    for result in scenarios:
        convention = extension_of(result)
        if convention:
            by_convention.setdefault(convention, []).append(str(result["scenario"]))
    if not by_convention:
        return []
    lines = [
        "## Standard and extension",
        "",
        "Each client has two scores. **Standard** scenarios test what RFCs and the clients' "
        "own documentation define. **Extension** scenarios (`ext` in the table) rest on a "
        "convention of tunnelws's own, which other clients are not expected to share:",
        "",
    ]
    lines += [f"- {convention}: {', '.join(ids)}." for convention, ids in by_convention.items()]
    return [*lines, ""]


def _translations_lines(name: str, results: list[Result]) -> list[str]:
    seen = sorted({what for result in results for what in translations(result)})
    if not seen:
        return []
    return [
        f"{TRANSLATED_MARK} The adapter passed settings as {name}'s own options "
        f"(translated): {'; '.join(f'`{what}`' for what in seen)}.",
        "",
    ]


def _versions_lines(versions: dict[str, str]) -> list[str]:
    if not versions:
        return []
    lines = ["## Tool versions", "", "| component | version |", "|---|---|"]
    lines += [f"| {name} | {_escape(version)} |" for name, version in versions.items()]
    return [*lines, ""]


def render(
    runs: list[dict[str, Any]],
    notes: dict[str, str],
    command_lines: list[str],
    report: Path,
    versions: dict[str, str] | None = None,
) -> str:
    """docs/compatibility.md from the report's runs."""
    order = [c.name for c in clients()]
    runs = sorted(runs, key=lambda r: order.index(r["client"]) if r["client"] in order else 99)
    names = [r["client"] for r in runs]
    by_client = {r["client"]: {x["scenario"]: x for x in r["results"]} for r in runs}
    seen: dict[str, Result] = {}
    for run in runs:
        for result in run["results"]:
            seen.setdefault(result["scenario"], result)
    # Catalogue order; scenarios the catalogue no longer holds go last.
    catalogue = list(SCENARIOS)
    ordered = sorted(
        seen.values(),
        key=lambda r: catalogue.index(r["scenario"]) if r["scenario"] in catalogue else 999,
    )
    libraries = {
        c.name: c.library + (" (has the HTTP fallback)" if c.fallback else "") for c in clients()
    }
    times = sorted(str(r.get("started", "")) for r in runs if r.get("started"))
    started = f"between {times[0]} and {times[-1]}" if len(times) > 1 else "".join(times)

    out: list[str] = []
    out += [
        "# Compatibility matrix",
        "",
        "Generated by `proxy/matrix.py` from runs of the harness "
        f"([harness.md](harness.md)) started {started or 'at an unknown time'}: every client "
        "through every scenario of the catalogue, in real network namespaces "
        "(how to reproduce: at the end). Each client uses its library's own proxy support, "
        "configured as its documentation tells a user, through the adapter in "
        "`proxy/adapters/` (see its README); tunnelws runs with its defaults.",
        "",
        "✔ correct · ✘ wrong (the flag the network raised, or what the client's "
        "error says: `407`, `dns`, `tls`, ...; `hang` = still running at the "
        "scenario's limit; `passed` = succeeded where a correct client fails; "
        "for tunnelws, the error category; `background*` = flags raised only by a "
        "browser's own background requests, its WebSocket was correct) · – skipped · "
        f"{TRANSLATED_MARK} the adapter translated a setting into the library's own option "
        "(the client's section says which) · `ext`: an extension scenario, scored apart "
        "(see below)",
        "",
    ]
    out.append("| scenario | expected | | " + " | ".join(f"`{n}`" for n in names) + " |")
    out.append("|---|---|---|" + "---|" * len(names))
    for scenario in ordered:
        sid = scenario["scenario"]
        cells = [_escape(cell(by_client[n].get(sid))) for n in names]
        kind = "ext" if extension_of(scenario) else ""
        out.append(f"| {sid} | {_expected(scenario)} | {kind} | " + " | ".join(cells) + " |")
    totals = {name: scores(run["results"]) for name, run in zip(names, runs, strict=True)}
    for score in ("standard", "extension"):
        row = [_score_text(totals[name][score]) for name in names]
        out.append(f"| **{score}** | | | " + " | ".join(row) + " |")
    out.append("")
    for name, note in notes.items():
        out.append(f"- `{name}`: {note}")
    if notes:
        out.append("")

    out += _at_a_glance(runs, by_client, [r["scenario"] for r in ordered])
    out += _local_proxy_section(runs, by_client, [r["scenario"] for r in ordered])
    out += _conventions_section(ordered)
    out += ["## Where each client fails, and why", ""]
    out += [
        "Each explanation below is derived from that scenario's artifacts (the proxy's "
        "log, the firewall's DNS and direct-connection counters, the adapter's stderr); "
        "the last column quotes the library's own error. An explanation of an extension "
        "scenario names the tunnelws convention it rests on.",
        "",
    ]
    for run in runs:
        name = run["client"]
        results = run["results"]
        wrong = [r for r in results if r["verdict"] in ("wrong", "error")]
        skipped = [r for r in results if r["verdict"] == "skipped"]
        counts = run["counts"]
        score = scores(results)
        out.append(f"### {name}")
        out.append("")
        summary = (
            f"{libraries.get(name, name)}: {_score_text(score['standard'])} standard, "
            f"{_score_text(score['extension'])} extension correct"
        )
        summary += f", {counts.get('skipped', 0)} skipped" if counts.get("skipped") else ""
        summary += f", {counts.get('error', 0)} error" if counts.get("error") else ""
        out += [summary + f" ({run.get('seconds', 0):.0f} s).", ""]
        out += _translations_lines(name, results)
        if not wrong:
            out += ["Correct in every scenario it ran.", ""]
        else:
            out += _explanations(name, wrong, report)
            out += [
                "",
                "| scenario | expected | got | network | the library's error |",
                "|---|---|---|---|---|",
            ]
            for result in wrong:
                if result["verdict"] == "error":
                    got = "harness error"
                elif result.get("timed_out"):
                    got = f"killed at {result.get('client_seconds', 0):.1f} s"
                else:
                    got = (
                        f"exit {result.get('exit_code')} in {result.get('client_seconds', 0):.1f} s"
                    )
                out.append(
                    f"| {result['scenario']} | {result['expect']} | {got} | "
                    f"{_escape(network_summary(result))} | "
                    f"{_escape(_clip(last_error(result))) or '–'} |"
                )
            out.append("")
        if skipped:
            skipped_ids = ", ".join(r["scenario"] for r in skipped)
            why = "; ".join(sorted({"; ".join(r.get("reasons") or []) for r in skipped}))
            out += [f"Skipped: {skipped_ids} ({why or 'prerequisite missing'}).", ""]

    out += _versions_lines(versions or {})
    out += [
        "## How to reproduce",
        "",
        "As root, from the repository root, after `make .venv/.installed` (with "
        "`tunnelws[kerberos]`), `npm ci` in `proxy/adapters/node_ws` and "
        "`sh tests/install-system-deps.sh` (squid, tinyproxy, microsocks, chromium, certutil, "
        "MIT Kerberos; see `proxy/adapters/README.md`), one command runs every column and "
        "writes this page (about 35 minutes on 2 cores, 15 columns):",
        "",
        "```console",
        "$ sudo .venv/bin/python proxy/matrix.py              # all clients, then this page",
        "$ sudo .venv/bin/python proxy/matrix.py --client aiohttp --client node-ws",
        "$ .venv/bin/python proxy/matrix.py --render-only     # this page from build/compat",
        "```",
        "",
        "It runs, one client after the other, into `build/compat/` "
        "(`report.html` there links every cell to its logs):",
        "",
        "```console",
        *[f"$ sudo {line}" for line in command_lines],
        "```",
        "",
        "One scenario of one client: add `--scenario ID` to its line. "
        "`tests/test_harness_matrix.py` re-runs every column on a sample of scenarios "
        "(every section) in CI and fails when a cell differs from this page.",
        "",
    ]
    return "\n".join(out)


# -- the published page, read back ------------------------------------------------


def published_cells(page: str) -> dict[str, dict[str, str]]:
    """The matrix table of a rendered page: client -> scenario -> cell text."""
    lines = page.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("| scenario | expected |")]
    if not starts:
        return {}
    header = starts[0]
    columns = [c.strip().strip("`") for c in lines[header].strip("|").split("|")]
    cells: dict[str, dict[str, str]] = {name: {} for name in columns[3:]}
    for line in lines[header + 2 :]:
        if not line.startswith("| ") or line.startswith("| **"):
            break
        values = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
        for name, value in zip(columns[3:], values[3:], strict=True):
            cells[name][values[0]] = value
    return cells


# -- tool versions ----------------------------------------------------------------


def _command_version(argv: Sequence[str], pattern: str = r"\d+(?:\.\d+)+") -> str | None:
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(pattern, out.stdout + out.stderr)
    return found.group(0) if found else None


def _python_version(module: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return None


def _node_version(package: str) -> str | None:
    path = ROOT / ADAPTERS / "node_ws" / "node_modules" / package / "package.json"
    try:
        return str(json.loads(path.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def _debian_version(package: str) -> str | None:
    return _command_version(["dpkg-query", "-W", "-f=${Version}", package], r"\S+")


def _git_commit() -> str | None:
    return _command_version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], r"\w+")


def tool_versions() -> dict[str, str]:
    """Every component a column measures or the network runs, and its version."""
    chromium = os.environ.get("TUNNELWS_CHROMIUM", "/usr/bin/chromium")
    found = {
        "tunnelws (git commit)": _git_commit(),
        "Python": platform.python_version(),
        "Linux kernel": platform.release(),
        **{name: _python_version(name) for name in PYTHON_PACKAGES},
        "Node.js": _command_version(["node", "--version"]),
        **{f"npm {name}": _node_version(name) for name in NODE_PACKAGES},
        "chromium": _command_version([chromium, "--version"]),
        **{f"Debian {name}": _debian_version(name) for name in DEBIAN_PACKAGES},
    }
    return {name: version for name, version in found.items() if version}


PYTHON_PACKAGES = (
    "websockets",
    "websocket-client",
    "aiohttp",
    "playwright",
    "python-socks",
    "pproxy",
    "pyspnego",
    "gssapi",
    "trio",
    "wsproto",
)
NODE_PACKAGES = ("ws", "https-proxy-agent", "proxy-agent", "proxy-from-env", "pac-proxy-agent")
DEBIAN_PACKAGES = ("squid", "tinyproxy", "microsocks", "krb5-kdc", "nftables", "iproute2")


def _display(command: Sequence[str]) -> str:
    """A command line as a reader types it from the repository root."""
    parts = []
    for part in command:
        if part == sys.executable:
            part = ".venv/bin/python"
        elif part.endswith("/bin/tunnelws") and part.startswith("TUNNELWS_BIN="):
            part = "TUNNELWS_BIN=.venv/bin/tunnelws"
        parts.append(part)
    return shlex.join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", type=Path, default=DEFAULT_REPORT, help="report directory")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the Markdown page")
    names = [c.name for c in clients()]
    parser.add_argument(
        "--client", action="append", choices=names, help="run only this client (repeatable)"
    )
    parser.add_argument(
        "--scenario",
        action="append",
        default=[],
        help="run only this scenario (repeatable; the column then holds only these)",
    )
    parser.add_argument(
        "--render-only", action="store_true", help="write the page from an existing report"
    )
    args = parser.parse_args(argv)
    report = args.report if args.report.is_absolute() else ROOT / args.report
    output = args.output if args.output.is_absolute() else ROOT / args.output
    notes_path = report / "matrix-notes.json"
    versions_path = report / "versions.json"
    notes: dict[str, str] = {}
    if notes_path.exists():
        notes = json.loads(notes_path.read_text())
    if not args.render_only:
        if os.geteuid() != 0:
            parser.error("running the harness needs root (use --render-only to only render)")
        report.mkdir(parents=True, exist_ok=True)
        versions_path.write_text(json.dumps(tool_versions(), indent=2) + "\n")
        for client in clients():
            if args.client and client.name not in args.client:
                continue
            begin = time.monotonic()
            problem = run_client(client, report, args.scenario)
            print(f"matrix: {client.name} took {time.monotonic() - begin:.0f} s", flush=True)
            if problem:
                notes[client.name] = problem
            else:
                notes.pop(client.name, None)
        notes_path.write_text(json.dumps(notes, indent=2) + "\n")
    try:
        runs = json.loads((report / "results.json").read_text())["runs"]
    except (OSError, ValueError, KeyError) as error:
        print(f"matrix: no usable {report / 'results.json'}: {error}", file=sys.stderr)
        return 1
    command_lines = [_display(harness_command(c, DEFAULT_REPORT)) for c in clients()]
    versions = json.loads(versions_path.read_text()) if versions_path.exists() else {}
    output.write_text(render(runs, notes, command_lines, report, versions))
    print(f"matrix: wrote {output.relative_to(ROOT) if output.is_relative_to(ROOT) else output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
