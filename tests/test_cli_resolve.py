"""``tunnelws resolve``: output, -v explanation, exit codes, redaction."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tunnelws.cli import main

SECRET = "Tr0ub4dor-3"
PROXY_VARIABLES = [
    *(name for base in ("wss", "ws", "https", "http", "all", "no") for name in
      (f"{base}_proxy", f"{base.upper()}_PROXY")),
    "REQUEST_METHOD",
]  # fmt: skip
TUNNELWS = Path(sys.executable).with_name("tunnelws")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests must not depend on the proxy settings of the machine running them."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["resolve", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_direct_when_nothing_is_set(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["wss://ws.example/chat"], capsys) == (0, "DIRECT\n", "")


def test_prints_the_redacted_proxy(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", f"http://bob:{SECRET}@proxy.corp:3128")
    code, out, err = run(["wss://ws.example/chat"], capsys)
    assert (code, out, err) == (0, "http://bob:***@proxy.corp:3128\n", "")


def test_verbose_explains_in_curl_style(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("wss_proxy", "")
    monkeypatch.setenv("https_proxy", f"bob:{SECRET}@proxy.corp:3128")
    monkeypatch.setenv("no_proxy", "localhost, *bad, .corp.example")
    code, out, err = run(["wss://ws.example/chat", "-v"], capsys)
    assert code == 0
    assert out == "http://bob:***@proxy.corp:3128\n"
    assert err.splitlines() == [
        "* URL wss://ws.example/chat -> host 'ws.example', port 443",
        "* wss_proxy = (empty: treated as unset)",
        "* WSS_PROXY = (unset)",
        "* https_proxy = 'bob:***@proxy.corp:3128'",
        "* no_proxy = 'localhost, *bad, .corp.example'",
        "* no_proxy entry '*bad' ignored: '*' is only allowed alone or as a leading '*.'",
        "* Rule: https_proxy is set (used for wss://)",
        "* Route: via http://bob:***@proxy.corp:3128 (CONNECT ws.example:443)",
    ]
    assert SECRET not in out + err


def test_verbose_no_proxy_match(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("https_proxy", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", ".corp.example")
    code, out, err = run(["wss://WS.Corp.Example:8443/", "--verbose"], capsys)
    assert (code, out) == (0, "DIRECT\n")
    assert "* Rule: NO_PROXY entry '.corp.example' matches host 'ws.corp.example'\n" in err
    assert "* no_proxy = (unset)\n" in err
    assert err.endswith("* Route: direct to ws.corp.example:8443\n")


def test_verbose_httpoxy(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REQUEST_METHOD", "GET")
    monkeypatch.setenv("HTTP_PROXY", "http://attacker.example:8080")
    code, out, err = run(["ws://ws.example", "-v"], capsys)
    assert (code, out) == (0, "DIRECT\n")
    assert "HTTP_PROXY ignored because REQUEST_METHOD is set" in err
    assert "attacker" not in err  # the ignored value is not even shown


def test_verbose_socks5h_says_the_proxy_resolves(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ALL_PROXY", "socks5h://tor.local")
    code, out, err = run(["wss://ws.example", "-v"], capsys)
    assert (code, out) == (0, "socks5h://tor.local:1080\n")
    assert "SOCKS5, the proxy resolves 'ws.example'" in err


def test_explicit_proxy_beats_environment_and_no_proxy(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("https_proxy", "http://env.corp:3128")
    monkeypatch.setenv("no_proxy", "*")
    code, out, err = run(
        ["wss://ws.example", "--proxy", f"https://u:{SECRET}@p.corp", "-v"], capsys
    )
    assert (code, out) == (0, "https://u:***@p.corp:443\n")
    assert "* Rule: explicit proxy argument\n" in err
    assert "env.corp" not in err  # the environment was not consulted
    assert SECRET not in err


def test_no_proxy_flag(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("https_proxy", "http://env.corp:3128")
    code, out, err = run(["wss://ws.example", "--no-proxy", "-v"], capsys)
    assert (code, out) == (0, "DIRECT\n")
    assert "* Rule: proxy=None: direct\n" in err


def test_proxy_and_no_proxy_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["resolve", "wss://ws.example", "--proxy", "p:1", "--no-proxy"])
    assert info.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("https_proxy", f"socks4://bob:{SECRET}@p.corp", "unsupported proxy scheme 'socks4'"),
        ("HTTPS_PROXY", f"http://bob:{SECRET}@p.corp:99999", "bad port '99999'"),
        ("all_proxy", f"http://bob:{SECRET}", "bad port"),
    ],
)
def test_bad_proxy_variable_exits_3_naming_it(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    reason: str,
) -> None:
    monkeypatch.setenv(variable, value)
    code, out, err = run(["wss://ws.example", "-v"], capsys)
    assert (code, out) == (3, "")
    assert err.count("\n") == 1 and err.startswith("tunnelws resolve: ")
    assert variable in err and reason in err
    assert SECRET not in err
    assert "Traceback" not in err


def test_bad_proxy_argument_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["wss://ws.example", "--proxy", "ftp://p.corp"], capsys)
    assert (code, out) == (3, "")
    assert "proxy argument" in err and "'ftp'" in err


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://ws.example", "unsupported URL scheme 'ftp'"),
        ("wss://", "has no host"),
        ("ws://ws.example:0x50/", "invalid URL"),
    ],
)
def test_bad_url_exits_2(url: str, reason: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run([url], capsys)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and reason in err


def test_console_script_in_a_real_process() -> None:
    if not TUNNELWS.exists():
        pytest.fail(f"{TUNNELWS} is missing: run `pip install -e .` (make installs it)")
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARIABLES}
    env.update(https_proxy=f"http://bob:{SECRET}@proxy.corp:3128", no_proxy="10.0.0.0/8")
    result = subprocess.run(
        [str(TUNNELWS), "resolve", "wss://ws.example/chat", "-v"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "http://bob:***@proxy.corp:3128\n"
    assert "* Rule: https_proxy is set (used for wss://)" in result.stderr
    assert SECRET not in result.stdout + result.stderr

    direct = subprocess.run(
        [str(TUNNELWS), "resolve", "wss://10.1.2.3/"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (direct.returncode, direct.stdout) == (0, "DIRECT\n")
