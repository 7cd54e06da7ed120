"""The one-way layering rule, read from the source (no imports run): the client
(src/tunnelws) never imports the test network, and the test network
(everything under proxy/) uses only the client's public API."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "src" / "tunnelws"
TESTNET = ROOT / "proxy"
IMPORT_FUNCTIONS = {"import_module", "__import__"}


def imported_names(source: str) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of every absolute import: statements anywhere in
    the file (functions, TYPE_CHECKING blocks) and literal
    ``importlib.import_module("...")`` / ``__import__("...")`` calls. For
    ``from M import a`` both ``M`` and ``M.a`` (``a`` may be a module)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Call) and node.args:
            function = node.func
            name = function.attr if isinstance(function, ast.Attribute) else getattr(
                function, "id", None
            )
            first = node.args[0]
            if (
                name in IMPORT_FUNCTIONS
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
            ):
                yield node.lineno, first.value


def names_the_test_network(name: str) -> bool:
    return name.split(".")[0] == "tunnelws_testnet"


def names_private_client_module(name: str) -> bool:
    """``tunnelws._x``, ``tunnelws.cli._options``...; dunders such as
    ``tunnelws.__version__`` are public."""
    top, *rest = name.split(".")
    return top == "tunnelws" and any(
        part.startswith("_") and not (part.startswith("__") and part.endswith("__"))
        for part in rest
    )


def violations(root: Path, rule: object) -> list[str]:
    assert callable(rule)
    found = []
    for path in sorted(root.rglob("*.py")):
        if "node_modules" in path.parts:
            continue
        for line, name in imported_names(path.read_text(encoding="utf-8")):
            if rule(name):
                found.append(f"{path.relative_to(ROOT)}:{line}: {name}")
    return found


def test_the_client_never_imports_the_test_network() -> None:
    assert len(list(CLIENT.rglob("*.py"))) > 20
    assert violations(CLIENT, names_the_test_network) == []


def test_the_test_network_uses_only_the_clients_public_api() -> None:
    # The package, the adapters and matrix.py are all under proxy/.
    files = {path.relative_to(TESTNET).parts[0] for path in TESTNET.rglob("*.py")}
    assert {"tunnelws_testnet", "adapters", "matrix.py"} <= files
    assert violations(TESTNET, names_private_client_module) == []


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("from tunnelws._transport import PrefixedStream", "tunnelws._transport"),
        ("from tunnelws import _errors", "tunnelws._errors"),
        ("def f():\n    import tunnelws.cli._options", "tunnelws.cli._options"),
        ("from tunnelws._check._report import render_step", "tunnelws._check._report"),
        ("import importlib\nimportlib.import_module('tunnelws._route')", "tunnelws._route"),
    ],
)
def test_private_imports_are_recognised(source: str, name: str) -> None:
    assert name in [found for _, found in imported_names(source)]
    assert any(names_private_client_module(found) for _, found in imported_names(source))


@pytest.mark.parametrize(
    "source",
    [
        "from tunnelws import open_websocket, __version__",
        "import tunnelws.streams",
        "from tunnelws.check import render_step",
        "from ._transport import prefixed",
    ],
)
def test_public_imports_pass(source: str) -> None:
    assert not any(names_private_client_module(found) for _, found in imported_names(source))


@pytest.mark.parametrize(
    "source",
    [
        "import tunnelws_testnet.origin",
        "if TYPE_CHECKING:\n    from tunnelws_testnet.harness import Scenario",
        "__import__('tunnelws_testnet.cli.serve')",
    ],
)
def test_test_network_imports_are_recognised(source: str) -> None:
    assert any(names_the_test_network(found) for _, found in imported_names(source))
