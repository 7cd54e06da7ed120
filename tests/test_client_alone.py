"""The client stands alone: with the ``testnet`` extra's modules blocked from
import (as in ``pip install tunnelws``), the client CLI and library work, the
test network's commands are listed and explain what to install, and the
pytest plugin leaves the user's pytest working. Fast: no venv, each case one
subprocess whose import system refuses trustme and pproxy."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from importlib.metadata import EntryPoint, requires
from pathlib import Path

import pytest

from tunnelws.cli import BUILTIN_COMMANDS, COMMAND_GROUP, _register_plugin, build_parser
from tunnelws_testnet._extras import EXTRA_MODULES

TESTNET_COMMANDS = ("serve", "proxy", "harness", "demo")
TESTNET_MARKER = re.compile(r"extra\s*==\s*[\"']testnet[\"']")
HINT = "pip install 'tunnelws[testnet]'"
MISSING = "the test network needs trustme and pproxy: " + HINT

# Run first in each subprocess: trustme and pproxy cannot be imported or found.
BLOCKER = """
import sys
class _BlockExtra:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"trustme", "pproxy"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _BlockExtra())
"""


def blocked(code: str, *argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + code, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return blocked("from tunnelws.cli import main\nsys.exit(main(sys.argv[1:]))\n", *argv)


def test_the_blocker_really_blocks() -> None:
    result = blocked("import trustme")
    assert result.returncode == 1 and "No module named 'trustme'" in result.stderr


def test_help_lists_every_command_without_the_extra() -> None:
    result = cli("--help")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    listed = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("    ")]
    assert set(listed) >= {*BUILTIN_COMMANDS, *TESTNET_COMMANDS}


@pytest.mark.parametrize("command", TESTNET_COMMANDS)
def test_a_test_network_command_names_the_extra_in_one_line(command: str) -> None:
    argv = ["harness", "list"] if command == "harness" else [command]
    result = cli(*argv)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == f"tunnelws {command}: {MISSING}\n"


def test_a_test_network_commands_own_help_still_works() -> None:
    result = cli("proxy", "--help")
    assert result.returncode == 0, result.stderr
    assert "strict-corporate" in result.stdout and "--intercept" in result.stdout


def test_the_library_and_a_client_command_import_nothing_of_the_test_network() -> None:
    # `resolve` goes through main(): a built-in command loads no plug-in.
    code = (
        "import io, contextlib, tunnelws\n"
        "from tunnelws.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    code = main(['resolve', 'ws://example.test/', '--no-proxy'])\n"
        "assert code == 0 and out.getvalue() == 'DIRECT\\n', (code, out.getvalue())\n"
        "loaded = sorted(m for m in sys.modules\n"
        "                if m.split('.')[0] in {'tunnelws_testnet', 'trustme', 'pproxy'})\n"
        "print(loaded)\n"
    )
    result = blocked(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n"


def test_the_pytest_plugin_leaves_a_users_pytest_working(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(
        "def test_plain():\n"
        "    assert 1 + 1 == 2\n"
        "\n"
        "async def test_network(corporate_network):\n"
        "    raise AssertionError('the fixture should have failed first')\n"
    )
    run_pytest = (
        "import pytest\n"
        "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-o', 'trio_mode=true',"
        " 'test_user.py']))\n"
    )
    result = blocked(run_pytest, cwd=tmp_path)
    # The plain test passes; the fixture errors with the one line, no traceback.
    assert "1 passed, 1 error" in result.stdout, result.stdout + result.stderr
    assert f"corporate_network: {MISSING}" in result.stdout
    assert "Traceback" not in result.stdout and "trustme" not in result.stderr


def test_extra_modules_match_the_testnet_extra() -> None:
    # What the installed metadata says the extra brings (its distributions
    # and modules have the same names).
    extra = [line for line in requires("tunnelws") or [] if TESTNET_MARKER.search(line)]
    names = {re.match(r"[A-Za-z0-9._-]+", line).group() for line in extra}  # type: ignore[union-attr]
    assert names == set(EXTRA_MODULES)


def test_a_broken_plug_in_costs_only_its_own_command(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser(plugins=False)
    subparsers = next(
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    )
    broken = EntryPoint(
        name="gateway", value="tunnelws_no_such_package.cli:register", group=COMMAND_GROUP
    )
    _register_plugin(broken, subparsers)
    error = capsys.readouterr().err
    assert error.startswith("tunnelws: command 'gateway' unavailable (")
    assert "ModuleNotFoundError" in error and error.count("\n") == 1
    assert parser.parse_args(["resolve", "ws://example.test/"]).command == "resolve"
    with pytest.raises(SystemExit):
        parser.parse_args(["gateway"])
