"""Run one client through scenarios and judge each run.

For every scenario: check its prerequisites (root, ``ip``, ``nft``, the
proxy's binary), build its network, run the client command in the client
namespace with the scenario's environment and time limit, read what the
network saw, tear everything down, and return a :class:`ScenarioResult` with a
verdict: ``correct``, ``wrong`` (with reasons), ``skipped`` (with the missing
prerequisite) or ``error`` (the harness itself could not build the network).
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

from ..peers import find_binary, parse_authentications, parse_ntlm_messages
from ._firewall import read_counters
from ._local_proxy import local_proxy
from ._netns import kill_pids, netns_pids
from ._network import (
    HarnessCA,
    NetworkStartError,
    RunningNetwork,
    make_harness_ca,
    read_text,
    scenario_network,
)
from ._observe import (
    FLAG_DESCRIPTIONS,
    Observation,
    flags_for,
    parse_origin_log,
    scenario_problems,
)
from ._scenarios import ProxyKind, Scenario

__all__ = [
    "EXIT_CODES",
    "ClientSpec",
    "RunResult",
    "ScenarioResult",
    "builtin_client",
    "check_prerequisites",
    "run_client",
]

# tunnelws's exit code per error category (src/tunnelws/_errors.py); used to
# check the failure category of clients that follow that convention.
EXIT_CODES = {
    "config": 3,
    "connect": 4,
    "proxy-connect": 5,
    "proxy-auth": 6,
    "proxy-refused": 7,
    "proxy-protocol": 8,
    "tls": 9,
    "handshake": 10,
    "timeout": 11,
    "connection-lost": 12,
}
CATEGORY_BY_EXIT_CODE = {code: category for category, code in EXIT_CODES.items()}
OUTPUT_LIMIT = 20_000  # characters of client output kept in the report
# Seconds after the client exits before the logs are read (the proxy's kind
# may need longer: squid logs a CONNECT only after the tunnel closed).
LOG_SETTLE = 0.25
MESSAGE_CHUNK = 4096  # TUNNELWS_MESSAGE length when the scenario repeats it


@dataclass(frozen=True)
class ClientSpec:
    """The client under test: a display name, its command, and whether it
    exits with tunnelws's per-category exit codes (then the category is checked)."""

    name: str
    argv: tuple[str, ...]
    exit_codes: bool = False
    # The client has tunnelws's HTTP fallback: judged on the scenarios'
    # ``expect_with_fallback`` where they have one.
    fallback: bool = False
    # Run through ``tunnelws local-proxy`` started in the client namespace with
    # the scenario's route; the client gets only http_proxy/https_proxy.
    through_local_proxy: bool = False


def builtin_client(name: str = "tunnelws") -> ClientSpec:
    """tunnelws's own client (``tunnelws_testnet.harness.clients.tunnelws_client``),
    which exits with tunnelws's codes and falls back to HTTP by default."""
    argv = (sys.executable, "-m", "tunnelws_testnet.harness.clients.tunnelws_client")
    return ClientSpec(name, argv, exit_codes=True, fallback=True)


@dataclass
class ScenarioResult:
    """The outcome and verdict of one client in one scenario."""

    scenario: str
    catalogue_id: str
    section: str
    expect: str
    verdict: str  # correct | wrong | skipped | error
    # The tunnelws convention the scenario tests (Extension's text), None if standard.
    extension: str | None = None
    reasons: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    exit_code: int | None = None
    category: str | None = None  # from the exit code, for tunnelws-style clients
    timed_out: bool = False
    time_limit: float = 0.0
    client_seconds: float = 0.0
    setup_seconds: float = 0.0
    url: str = ""
    env: dict[str, str] = field(default_factory=dict)
    stdout: str = ""
    stderr: str = ""
    proxy_log: list[str] = field(default_factory=list)
    origin_log: list[str] = field(default_factory=list)
    observation: dict[str, Any] = field(default_factory=dict)
    # Through the local proxy: its --log entries and its output.
    local_proxy_log: list[dict[str, Any]] = field(default_factory=list)
    local_proxy_output: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunResult:
    """One client through a list of scenarios."""

    client: str
    command: list[str]
    started: str
    seconds: float
    results: list[ScenarioResult]

    @property
    def all_correct(self) -> bool:
        return all(r.verdict in ("correct", "skipped") for r in self.results)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("correct", "wrong", "skipped", "error"), 0)
        for result in self.results:
            counts[result.verdict] += 1
        return counts

    def to_json(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "command": self.command,
            "started": self.started,
            "seconds": round(self.seconds, 3),
            "counts": self.counts(),
            "results": [r.to_json() for r in self.results],
        }


def check_prerequisites(scenario: Scenario) -> str | None:
    """Why ``scenario`` cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and nftables)"
    if (
        scenario.proxy is not None
        and scenario.proxy.kind in (ProxyKind.PPROXY, ProxyKind.SOCKS5)
        and importlib.util.find_spec("pproxy") is None
    ):
        return "the pproxy package is not installed (pip install pproxy)"
    if (
        scenario.proxy is not None
        and scenario.proxy.kerberos
        and importlib.util.find_spec("gssapi") is None
    ):
        return "python-gssapi is not installed (pip install 'tunnelws[kerberos]')"
    for binary in ("ip", "nft", *scenario.requires):
        if find_binary(binary) is None:
            return f"{binary} is not installed"
    return None


async def run_client(
    client: ClientSpec,
    scenarios: Sequence[Scenario],
    *,
    workdir: Path,
    on_start: Callable[[int, Scenario], None] | None = None,
    on_result: Callable[[int, ScenarioResult], None] | None = None,
) -> RunResult:
    """Run ``client`` through ``scenarios`` one after another."""
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    begin = time.monotonic()
    os.makedirs(workdir, exist_ok=True)
    ca: HarnessCA | None = None
    results = []
    for index, scenario in enumerate(scenarios):
        if on_start is not None:
            on_start(index, scenario)
        reason = check_prerequisites(scenario)
        if reason is not None:
            result = _skeleton(client, scenario, "skipped", [reason])
        else:
            if ca is None:
                ca = make_harness_ca(workdir / "ca")
            result = await run_scenario(client, scenario, ca=ca, directory=workdir / scenario.id)
        results.append(result)
        if on_result is not None:
            on_result(index, result)
    return RunResult(client.name, list(client.argv), started, time.monotonic() - begin, results)


def _skeleton(
    client: ClientSpec, scenario: Scenario, verdict: str, reasons: list[str]
) -> ScenarioResult:
    return ScenarioResult(
        scenario=scenario.id,
        catalogue_id=scenario.catalogue_id,
        section=scenario.section,
        expect=scenario.expect_for(fallback=client.fallback),
        verdict=verdict,
        extension=None if scenario.extension is None else scenario.extension.value,
        reasons=reasons,
        time_limit=scenario.time_limit,
        url=scenario.url,
    )


def _message(scenario: Scenario) -> str:
    base = f"tunnelws-harness {scenario.id} {secrets.token_hex(4)}"
    if scenario.message_repeat == 1:
        return base
    return (base + " " + "x" * MESSAGE_CHUNK)[:MESSAGE_CHUNK]


async def run_scenario(
    client: ClientSpec, scenario: Scenario, *, ca: HarnessCA, directory: Path
) -> ScenarioResult:
    """Build ``scenario``, run ``client`` in it once, and judge the run."""
    result = _skeleton(client, scenario, "error", [])
    message = _message(scenario)
    setup_start = time.monotonic()
    try:
        async with scenario_network(
            scenario, ca=ca, directory=directory, message=message
        ) as network:
            result.setup_seconds = round(time.monotonic() - setup_start, 3)
            result.env = network.masked_env()
            await _run_and_observe(client, network, message * scenario.message_repeat, result)
    except (NetworkStartError, OSError, RuntimeError, subprocess.SubprocessError) as exc:
        result.verdict = "error"
        result.reasons = [f"harness could not build the network: {exc}"]
    return result


async def _run_and_observe(
    client: ClientSpec, network: RunningNetwork, expected_echo: str, result: ScenarioResult
) -> None:
    if client.through_local_proxy:
        async with local_proxy(network) as helper:
            if helper.url is not None:
                result.env = network.masked_env(helper.client_env)
                await _run_client_process(client, network, helper.client_env, result)
            else:
                # The pair failed before the client could start: the helper's
                # status and words stand for it.
                result.exit_code = helper.exit_code
                (network.directory / "client.stderr").write_text(f"{helper.failure}\n")
        result.local_proxy_log = helper.log
        result.local_proxy_output = _mask(_clip(helper.output), network.secrets)
    else:
        await _run_client_process(client, network, network.client_env, result)
    await _observe(client, network, expected_echo, result)


async def _run_client_process(
    client: ClientSpec, network: RunningNetwork, env: dict[str, str], result: ScenarioResult
) -> None:
    scenario = network.scenario
    stdout_path = network.directory / "client.stdout"
    stderr_path = network.directory / "client.stderr"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        begin = time.monotonic()
        process = await trio.lowlevel.open_process(
            ["ip", "netns", "exec", network.topology.client, *client.argv],
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=env,
            start_new_session=True,
        )
        network.topology.pids.append(process.pid)
        with trio.move_on_after(scenario.time_limit) as scope:
            await process.wait()
        result.client_seconds = round(time.monotonic() - begin, 3)
        if scope.cancelled_caught:
            result.timed_out = True
            # The client and anything it started (browsers, node workers).
            await trio.to_thread.run_sync(
                kill_pids, [process.pid, *netns_pids(network.topology.client)], 0.5
            )
            with trio.move_on_after(2):
                await process.wait()
        result.exit_code = process.returncode


async def _observe(
    client: ClientSpec, network: RunningNetwork, expected_echo: str, result: ScenarioResult
) -> None:
    scenario = network.scenario
    stdout_path = network.directory / "client.stdout"
    stderr_path = network.directory / "client.stderr"
    proxy = network.proxy
    await trio.sleep(max(LOG_SETTLE, proxy.log_delay if proxy else 0.0))
    counters = await trio.to_thread.run_sync(read_counters, network.topology.router)
    observation = Observation(
        direct_attempts=counters.get("direct", 0),
        dns_queries=counters.get("dns", 0),
        dead_proxy_attempts=counters.get("dead_proxy", 0),
    )
    proxy_text = read_text(network.proxy_log)
    if proxy is not None and scenario.proxy is not None:
        observation.proxy_requests = proxy.parse(proxy_text)
        if scenario.proxy.kind is ProxyKind.COMPANION:
            observation.ntlm_messages = parse_ntlm_messages(proxy_text)
            observation.authenticated = parse_authentications(proxy_text)
    origin_text = read_text(network.origin_log)
    observation.origin_requests = parse_origin_log(origin_text)
    stdout_text = read_text(stdout_path)
    result.stdout = _mask(_clip(stdout_text), network.secrets)
    result.stderr = _mask(_clip(read_text(stderr_path)), network.secrets)
    result.proxy_log = _mask(proxy_text, network.secrets).splitlines()[-200:]
    result.origin_log = origin_text.splitlines()[-200:]
    result.observation = observation.to_json()
    _judge(client, scenario, result, observation, echoed=_echoed(stdout_text, expected_echo))


def _judge(
    client: ClientSpec,
    scenario: Scenario,
    result: ScenarioResult,
    observation: Observation,
    *,
    echoed: bool,
) -> None:
    reasons = []
    code = result.exit_code
    if client.exit_codes and code is not None and code > 0:
        result.category = CATEGORY_BY_EXIT_CODE.get(code)
    passed = code == 0 and echoed and not result.timed_out
    expect = scenario.expect_for(fallback=client.fallback)
    expected_category = expect.partition(":")[2] or None
    if result.timed_out:
        reasons.append(f"still running after the {scenario.time_limit:g} s limit (killed)")
    elif expect == "pass":
        if code != 0:
            reasons.append(
                f"expected pass, client exited with status {code}"
                + (f" ({result.category})" if result.category else "")
            )
        elif not echoed:
            reasons.append(
                "expected pass, but the echo was not printed on stdout"
                + (
                    f" (the message is TUNNELWS_MESSAGE repeated "
                    f"TUNNELWS_MESSAGE_REPEAT={scenario.message_repeat} times)"
                    if scenario.message_repeat > 1
                    else ""
                )
            )
    elif code == 0:
        reasons.append(f"expected {expect}, but the client exited 0")
    elif client.exit_codes and expected_category is not None:
        expected_code = EXIT_CODES[expected_category]
        if code != expected_code:
            reasons.append(
                f"expected category {expected_category} (exit {expected_code}), "
                f"got exit {code}" + (f" ({result.category})" if result.category else "")
            )
    result.flags = flags_for(scenario, observation)
    reasons += [f"{flag}: {FLAG_DESCRIPTIONS[flag]}" for flag in result.flags]
    reasons += scenario_problems(scenario, observation, passed)
    result.reasons = reasons
    result.verdict = "wrong" if reasons else "correct"


def _echoed(stdout: str, expected: str) -> bool:
    return any(line.rstrip("\r") == expected for line in stdout.split("\n"))


def _clip(text: str) -> str:
    if len(text) <= OUTPUT_LIMIT:
        return text
    return (
        text[: OUTPUT_LIMIT // 2]
        + f"\n[... {len(text) - OUTPUT_LIMIT} characters ...]\n"
        + text[-OUTPUT_LIMIT // 2 :]
    )


def _mask(text: str, secrets_: Sequence[str]) -> str:
    for secret in secrets_:
        text = text.replace(secret, "***")
    return text
