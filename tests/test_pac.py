"""PAC: pac+file:// and pac+http:// scripts run by pypac (dukpy), failover
over the answer's routes, caching, and ``tunnelws resolve -v``."""

from __future__ import annotations

import argparse
import socket
from collections.abc import Callable
from functools import partial
from pathlib import Path

import dukpy  # noqa: F401  a core dependency: missing, the install is broken (fail, never skip)
import pypac  # noqa: F401  a core dependency: missing, the install is broken (fail, never skip)
import pytest
import trio

import tunnelws
from companion_support import start_proxy, start_tcp_echo, wait_until_idle
from tunnelws._errors import ProxyConfigError
from tunnelws._pac import PacResolver, PacSource, default_resolver, parse_pac_answer
from tunnelws._route import resolve_proxy
from tunnelws._target import parse_target
from tunnelws.cli import resolve as resolve_cli


@pytest.fixture(autouse=True)
def fresh_pac_cache() -> None:
    default_resolver().clear()


def dead_port() -> int:
    """A loopback port nobody listens on (connecting gets a reset)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def pac_script(answer: str) -> str:
    return (
        "function FindProxyForURL(url, host) {\n"
        '  if (shExpMatch(host, "*.direct.test")) return "DIRECT";\n'
        f'  return "{answer}";\n'
        "}\n"
    )


def write_pac(tmp_path: Path, answer: str) -> str:
    path = tmp_path / "proxy.pac"
    path.write_text(pac_script(answer))
    return f"pac+file://{path}"


async def serve_pac(nursery: trio.Nursery, body: str, hits: list[str]) -> int:
    """A minimal HTTP/1.1 server that hands out one PAC file."""

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            request = b""
            with trio.move_on_after(5):
                while b"\r\n\r\n" not in request:
                    data = await stream.receive_some(4096)
                    if not data:
                        return
                    request += data
            hits.append(request.split(b"\r\n", 1)[0].decode())
            payload = body.encode()
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ns-proxy-autoconfig\r\n"
                + f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def echo(proxy: str, port: int, trace: Callable[[str], None]) -> bytes:
    stream = await tunnelws.open_tunnel(
        "127.0.0.1", port, scheme="http", proxy=proxy, trace=trace, connect_timeout=5
    )
    async with stream:
        await stream.send_all(b"pac")
        with trio.fail_after(5):
            return bytes(await stream.receive_some(10))


def test_parse_pac_answer() -> None:
    routes, notes = parse_pac_answer(
        "PROXY a.corp:3128; HTTPS b.corp:443;SOCKS c.corp:1080 ; SOCKS5 d:1; DIRECT; BOGUS x:1"
    )
    assert [str(r) if r else "DIRECT" for r in routes] == [
        "http://a.corp:3128",
        "https://b.corp:443",
        "socks5h://c.corp:1080",
        "socks5h://d:1",
        "DIRECT",
    ]
    assert notes == ["PAC entry 'BOGUS x:1' ignored: not PROXY/HTTPS/SOCKS host:port or DIRECT"]
    assert parse_pac_answer("") == ([None], [])  # empty answer: direct, as in browsers
    bad_routes, bad_notes = parse_pac_answer("PROXY a:99999")
    assert bad_routes == [] and "bad port" in bad_notes[0]


def test_pac_settings_parse_and_reject() -> None:
    decision = resolve_proxy("wss://x.example", "pac+file:///etc/proxy.pac")
    assert decision.proxy is None and decision.pac == PacSource(
        "file:///etc/proxy.pac", "proxy argument"
    )
    assert str(decision) == "pac+file:///etc/proxy.pac"
    env = {"https_proxy": "pac+http://wpad.corp/wpad.dat"}
    from_env = resolve_proxy("wss://x.example", env=env)
    assert from_env.pac is not None and from_env.source == "https_proxy"
    assert resolve_proxy("wss://localhost", env=env).pac is None  # loopback stays direct
    assert resolve_proxy("wss://x.example", "pac+wpad:").pac == PacSource("wpad:", "proxy argument")
    with pytest.raises(ProxyConfigError, match="pac\\+file:///PATH"):
        resolve_proxy("wss://x.example", "pac+ftp://host/p.pac")
    with pytest.raises(ProxyConfigError, match="must not carry a password"):
        resolve_proxy("wss://x.example", "pac+http://u:secret@host/p.pac")


async def test_dead_first_proxy_fails_over_to_the_second(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    echo_port = await start_tcp_echo(nursery)
    proxy = await start_proxy(nursery)
    dead = dead_port()
    pac = write_pac(tmp_path, f"PROXY 127.0.0.1:{dead}; PROXY 127.0.0.1:{proxy.port}; DIRECT")
    lines: list[str] = []
    assert await echo(pac, echo_port, lines.append) == b"pac"
    text = "\n".join(lines)
    assert f"Attempt order: http://127.0.0.1:{dead}, http://127.0.0.1:{proxy.port}, DIRECT" in text
    assert f"* Route 1/3 http://127.0.0.1:{dead} failed: cannot connect to proxy" in text
    assert "Route 2/3" not in text  # the second one worked
    await wait_until_idle(proxy)
    assert proxy.stats.connects == 1


async def test_every_route_failing_lists_each_failure(tmp_path: Path) -> None:
    first, second = dead_port(), dead_port()
    pac = write_pac(tmp_path, f"PROXY 127.0.0.1:{first}; SOCKS5 127.0.0.1:{second}")
    with pytest.raises(tunnelws.ProxyConnectError) as info:
        await echo(pac, 9, lambda line: None)
    message = str(info.value)
    assert f"http://127.0.0.1:{first}: cannot connect" in message
    assert f"socks5h://127.0.0.1:{second}: cannot connect" in message


async def test_direct_after_a_dead_proxy(nursery: trio.Nursery, tmp_path: Path) -> None:
    echo_port = await start_tcp_echo(nursery)
    pac = write_pac(tmp_path, f"PROXY 127.0.0.1:{dead_port()}; DIRECT")
    lines: list[str] = []
    assert await echo(pac, echo_port, lines.append) == b"pac"
    assert any(line.startswith("* Connected to origin 127.0.0.1") for line in lines)


async def test_pac_over_http_is_fetched_once_and_cached(nursery: trio.Nursery) -> None:
    echo_port = await start_tcp_echo(nursery)
    proxy = await start_proxy(nursery)
    hits: list[str] = []
    pac_port = await serve_pac(nursery, pac_script(f"PROXY 127.0.0.1:{proxy.port}"), hits)
    setting = f"pac+http://127.0.0.1:{pac_port}/proxy.pac"
    for _ in range(2):
        lines: list[str] = []
        assert await echo(setting, echo_port, lines.append) == b"pac"
    assert hits == ["GET /proxy.pac HTTP/1.1"]
    assert any("(cached)" in line for line in lines)


async def test_resolver_query_url_and_host_rules(tmp_path: Path) -> None:
    resolver = PacResolver()
    pac = PacSource.parse(write_pac(tmp_path, "PROXY p.corp:8080"), source="test")
    answer = await resolver.find_proxy(pac, parse_target("wss://a.direct.test/chat?x=1"))
    assert answer.text == "DIRECT" and answer.routes == (None,)
    assert answer.query_url == "https://a.direct.test:443/"  # wss as https, origin only
    other = await resolver.find_proxy(pac, parse_target("ws://b.example:8080/chat"))
    assert other.query_url == "http://b.example:8080/chat"
    assert [str(r) for r in other.routes] == ["http://p.corp:8080"]


@pytest.mark.parametrize(
    ("script", "problem"),
    [
        ("function FindProxyForURL(url, host) { return undefinedThing(); }", "not valid"),
        ("this is not javascript", "not valid"),
    ],
)
async def test_broken_pac_is_a_config_error(tmp_path: Path, script: str, problem: str) -> None:
    path = tmp_path / "bad.pac"
    path.write_text(script)
    with pytest.raises(ProxyConfigError, match=problem):
        await echo(f"pac+file://{path}", 9, lambda line: None)


async def test_missing_pac_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ProxyConfigError, match="cannot load the PAC script"):
        await echo(f"pac+file://{tmp_path}/nope.pac", 9, lambda line: None)


def test_resolve_verbose_shows_the_pac_answer_and_attempt_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pac = write_pac(tmp_path, "PROXY a.corp:3128; SOCKS b.corp:1080; DIRECT")
    parser = argparse.ArgumentParser()
    resolve_cli.register(parser.add_subparsers())
    args = parser.parse_args(["resolve", "wss://chat.example/", "--proxy", pac, "-v"])
    assert resolve_cli.run(args, env={}) == 0
    out, err = capsys.readouterr()
    assert out == "http://a.corp:3128\n"
    assert "PAC FindProxyForURL('https://chat.example:443/', 'chat.example') = " in err
    assert "'PROXY a.corp:3128; SOCKS b.corp:1080; DIRECT'" in err
    assert "* Attempt 1: via http://a.corp:3128 (CONNECT chat.example:443)" in err
    assert "* Attempt 2: via socks5h://b.corp:1080 (SOCKS5, the proxy resolves" in err
    assert "* Attempt 3: direct to chat.example:443" in err


def test_wpad_candidates_include_the_bare_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from tunnelws import _pac

    monkeypatch.setattr(socket, "getfqdn", lambda name="": "pc.branch.corp.example.com")
    urls = _pac._wpad_urls()
    assert urls[0] == "http://wpad.branch.corp.example.com/wpad.dat"
    assert "http://wpad.corp.example.com/wpad.dat" in urls
    assert urls[-1] == "http://wpad/wpad.dat"


async def test_wpad_fetches_the_first_reachable_candidate(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tunnelws import _pac

    hits: list[str] = []
    port = await serve_pac(nursery, pac_script("PROXY found.corp:3128"), hits)
    candidates = [f"http://127.0.0.1:{dead_port()}/wpad.dat", f"http://127.0.0.1:{port}/wpad.dat"]
    monkeypatch.setattr(_pac, "_wpad_urls", lambda: candidates)
    logged: list[str] = []
    answer = await PacResolver().find_proxy(
        PacSource("wpad:", "test"), parse_target("wss://x.example/"), log=logged.append
    )
    assert answer.script_url == candidates[1]
    assert [str(r) for r in answer.routes] == ["http://found.corp:3128"]
    assert logged and candidates[0] in logged[0]
