"""``pip install tunnelws`` with no extras, for real: a fresh venv gets the
project and pytest (a user's own), nothing else, and then the client
works on its own, through a real proxy (pproxy, from the test venv) to the
origin test server, while the test network's commands say what to install.

One venv for the module (about 15 s: venv, then pip from its warm cache).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from peers import run_pproxy
from tunnelws_testnet.peers import ProxyProcess

ROOT = Path(__file__).resolve().parent.parent
HINT = "pip install 'tunnelws[testnet]'"
INSTALL_TIMEOUT = 240
COMMAND_TIMEOUT = 30
# A clean environment: no proxy variables from the host, no project paths.
ENV = {
    key: value
    for key, value in os.environ.items()
    if "proxy" not in key.lower() and key not in {"PYTHONPATH", "VIRTUAL_ENV"}
}

pytestmark = pytest.mark.timeout(INSTALL_TIMEOUT + 60)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ directory of a venv holding ``pip install ROOT pytest``."""
    home = tmp_path_factory.mktemp("no-extras") / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", str(home)], check=True, timeout=INSTALL_TIMEOUT, env=ENV
    )
    install = subprocess.run(
        [str(home / "bin" / "python"), "-m", "pip", "install", "--quiet",
         "--disable-pip-version-check", str(ROOT), "pytest"],
        capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False, env=ENV,
    )
    assert install.returncode == 0, install.stdout + install.stderr[-3000:]
    return home / "bin"


@pytest.fixture(scope="module")
def pproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    with run_pproxy(tmp_path=tmp_path_factory.mktemp("pproxy")) as proxy:
        yield proxy


def run(venv: Path, *argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / argv[0]), *argv[1:]],
        input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False,
        env=ENV, cwd=venv,
    )


def test_the_venv_has_neither_the_test_network_extra_nor_the_checkout(venv: Path) -> None:
    result = run(venv, "python", "-c", (
        "import importlib.util as u, tunnelws\n"
        "print(u.find_spec('trustme'), u.find_spec('pproxy'), tunnelws.__file__)"
    ))
    assert result.returncode == 0, result.stderr
    trustme, pproxy, location = result.stdout.split()
    assert (trustme, pproxy) == ("None", "None")
    assert location.startswith(str(venv.parent)), location


def test_importing_the_library_imports_nothing_of_the_test_network(venv: Path) -> None:
    result = run(venv, "python", "-c", (
        "import sys, tunnelws, tunnelws.check, tunnelws.streams\n"
        "prefixes = ('tunnelws_testnet', 'trustme', 'pproxy')\n"
        "assert not any(m.startswith(prefixes) for m in sys.modules), sorted(sys.modules)\n"
    ))
    assert result.returncode == 0, result.stderr


def test_help_lists_the_clients_and_the_test_networks_commands(venv: Path) -> None:
    result = run(venv, "tunnelws", "--help")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    for command in ("connect", "resolve", "events", "check", "serve", "proxy", "harness", "demo"):
        assert f"    {command} " in result.stdout, command


def test_resolve_decides_a_route(venv: Path) -> None:
    direct = run(venv, "tunnelws", "resolve", "ws://example.test/", "--no-proxy")
    assert (direct.returncode, direct.stdout) == (0, "DIRECT\n"), direct.stderr
    proxied = run(venv, "tunnelws", "resolve", "wss://example.test/", "--proxy",
                  "http://bob:secret@proxy.example:3128")
    assert proxied.returncode == 0, proxied.stderr
    assert proxied.stdout == "http://bob:***@proxy.example:3128\n"


@pytest.mark.parametrize("command", ["serve", "proxy", "harness", "demo"])
def test_test_network_commands_name_the_extra(venv: Path, command: str) -> None:
    argv = ["harness", "list"] if command == "harness" else [command]
    result = run(venv, "tunnelws", *argv)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"tunnelws {command}: the test network needs trustme and pproxy: {HINT}\n"
    )


def test_a_users_pytest_runs_with_the_plugin_loaded(venv: Path, tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text("def test_plain():\n    assert 2 + 2 == 4\n")
    result = run(venv, "python", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 "--markers", str(tmp_path))
    # The tunnelws entry point is loaded (its marker is registered)...
    assert "@pytest.mark.corporate_network(scenario)" in result.stdout, result.stderr
    result = run(venv, "python", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 str(tmp_path / "test_user.py"))
    # ...and the user's own tests run.
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout + result.stderr


async def test_connect_echoes_through_a_real_proxy(
    venv: Path, origin, pproxy: ProxyProcess  # type: ignore[no-untyped-def]
) -> None:
    message = "hello from a bare install"
    with trio.fail_after(COMMAND_TIMEOUT):
        result = await trio.run_process(
            [str(venv / "tunnelws"), "connect", origin.ws_url(), "--proxy", pproxy.url],
            stdin=f"{message}\n".encode(), capture_stdout=True, capture_stderr=True,
            check=False, env=ENV,
        )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode() == f"{message}\n"
    # The tunnel really went through pproxy, to the origin's port.
    await pproxy.wait_for_access_log_async(f":{origin.http[1]}")


async def test_check_walks_the_path_through_a_real_proxy(
    venv: Path, origin, pproxy: ProxyProcess  # type: ignore[no-untyped-def]
) -> None:
    with trio.fail_after(COMMAND_TIMEOUT):
        result = await trio.run_process(
            [str(venv / "tunnelws"), "check", origin.ws_url(), "--proxy", pproxy.url,
             ],
            capture_stdout=True, capture_stderr=True, check=False, env=ENV,
        )
    report = result.stdout.decode()
    assert result.returncode == 0, report + result.stderr.decode()
    assert "Result: the path works (exit 0)." in report


async def test_events_reads_a_stream_through_a_real_proxy(
    venv: Path, origin, pproxy: ProxyProcess  # type: ignore[no-untyped-def]
) -> None:
    url = origin.http_url("/timestamp?interval=0.05&count=2&event=tick")
    with trio.fail_after(COMMAND_TIMEOUT):
        result = await trio.run_process(
            [str(venv / "tunnelws"), "events", url, "--proxy", pproxy.url, "--count", "2"],
            capture_stdout=True, capture_stderr=True, check=False, env=ENV,
        )
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 2 and all(line.startswith("tick: ") for line in lines), lines
