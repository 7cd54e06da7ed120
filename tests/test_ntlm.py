"""NTLM and Negotiate proxy authentication: the tunnelws client (pyspnego
initiator) against the companion proxy (pyspnego acceptor), message by
message, plus the connection-bound failure modes."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

import pytest
import spnego  # noqa: F401  a core dependency: missing, the install is broken (fail, never skip)
import trio

import tunnelws
from companion_support import (
    echo_through,
    run_curl,
    start_proxy,
    start_tcp_echo,
    wait_until_idle,
)
from tunnelws._auth import ProxyAuthenticator
from tunnelws._connect import ProxyReply
from tunnelws_testnet.companion._ntlm import describe_ntlm_message

USER, PASSWORD = "CORP\\alice", "s3cret-pw"
NEGOTIATE_UNICODE = 0x00000001
NEGOTIATE_NTLM = 0x00000200
EXTENDED_SESSION_SECURITY = 0x00080000


def proxy_url(proxy: Any, user: str = USER, password: str = PASSWORD) -> str:
    return f"http://{quote(user, safe='')}:{quote(password, safe='')}@{proxy.host}:{proxy.port}"


async def start(nursery: trio.Nursery, scheme: str, **options: Any) -> tuple[Any, list[Any]]:
    records: list[dict[str, Any]] = []
    proxy = await start_proxy(
        nursery, auth=(USER, PASSWORD), auth_scheme=scheme, log=records.append, **options
    )
    return proxy, records


def ntlm_messages(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r["ntlm"] for r in records if r["event"] == "auth-message"]


async def test_ntlm_exchange_message_by_message(nursery: trio.Nursery) -> None:
    echo_port = await start_tcp_echo(nursery)
    proxy, records = await start(nursery, "ntlm")
    assert await echo_through(proxy_url(proxy), echo_port) == b"ping"
    await wait_until_idle(proxy)

    # No preemptive Basic for a DOMAIN\\user name: a bare CONNECT gets the
    # NTLM offer, then the three NTLM messages travel, the challenge between.
    messages = ntlm_messages(records)
    assert [m["type"] for m in messages] == [1, 2, 3]
    negotiate_flags = int(messages[0]["flags"], 16)
    assert negotiate_flags & NEGOTIATE_NTLM and negotiate_flags & NEGOTIATE_UNICODE
    assert negotiate_flags & EXTENDED_SESSION_SECURITY
    assert messages[2]["user"] == "alice" and messages[2]["domain"] == "CORP"
    assert messages[2]["nt_response_bytes"] > 24  # NTLMv2, not v1
    events = [r["event"] for r in records]
    required = [r for r in records if r["event"] == "auth-required"]
    assert [r["credentials"] for r in required] == [False, True]  # bare CONNECT, type 1
    assert events.count("auth-required") == 2
    tunnel = next(r for r in records if r["event"] == "tunnel")
    assert tunnel["user"] == "CORP\\alice"
    # All three NTLM legs happened on one client connection.
    clients = {r["client"] for r in records if r["event"] == "auth-message"}
    assert len(clients) == 1


async def test_curl_ntlm_client_against_the_companion(nursery: trio.Nursery, origin: Any) -> None:
    """An independent NTLM client (curl's) passes the companion's check too."""
    proxy, records = await start(nursery, "ntlm")
    result = await run_curl(
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--proxy-ntlm",
        "-U",
        f"{USER}:{PASSWORD}",
        "-x",
        proxy.url,
        "-p",
        f"http://127.0.0.1:{origin.http[1]}/info",
    )
    assert result.stdout == b"200", result.stderr
    await wait_until_idle(proxy)
    assert [m["type"] for m in ntlm_messages(records)] == [1, 2, 3]
    assert next(r for r in records if r["event"] == "tunnel")["user"] == USER


async def test_wrong_ntlm_password_is_a_clear_auth_error(nursery: trio.Nursery) -> None:
    echo_port = await start_tcp_echo(nursery)
    proxy, records = await start(nursery, "ntlm")
    with pytest.raises(tunnelws.ProxyAuthError) as info:
        await echo_through(proxy_url(proxy, password="wrong"), echo_port)
    assert "rejected the NTLM credentials for user 'CORP\\\\alice'" in str(info.value)
    assert "s3cret" not in str(info.value)
    assert [m["type"] for m in ntlm_messages(records)] == [1, 2, 3]


async def test_proxy_closing_after_the_challenge_is_an_error_not_a_loop(
    nursery: trio.Nursery,
) -> None:
    echo_port = await start_tcp_echo(nursery)
    proxy, records = await start(nursery, "ntlm", close_after_407=True)
    with pytest.raises(tunnelws.ProxyAuthError) as info:
        await echo_through(proxy_url(proxy), echo_port)
    message = str(info.value)
    assert "closed the connection after its NTLM challenge" in message
    assert "authenticates one connection" in message
    # No type 3 was ever sent: the client stopped instead of starting over.
    assert [m["type"] for m in ntlm_messages(records)] == [1, 2]
    assert sum(r["event"] == "auth-required" for r in records) == 2


async def test_negotiate_without_kerberos_falls_back_to_ntlm_inside_spnego(
    nursery: trio.Nursery,
) -> None:
    echo_port = await start_tcp_echo(nursery)
    proxy, records = await start(nursery, "negotiate")
    assert await echo_through(proxy_url(proxy), echo_port) == b"ping"
    assert [m["type"] for m in ntlm_messages(records)] == [1, 2, 3]


@pytest.mark.parametrize("override", [None, ("NTLM",)])
async def test_preemptive_basic_and_the_scheme_override(
    nursery: trio.Nursery, override: tuple[str, ...] | None
) -> None:
    """A plain user name gets preemptive Basic (refused here, then NTLM);
    ``proxy_auth_schemes=("NTLM",)`` keeps Basic off the wire entirely."""
    from tunnelws._target import Target
    from tunnelws._timeouts import PhaseClock
    from tunnelws._transport import RouteOptions, open_route_stream

    echo_port = await start_tcp_echo(nursery)
    records: list[dict[str, Any]] = []
    proxy = await start_proxy(
        nursery, auth=("alice", PASSWORD), auth_scheme="ntlm", log=records.append
    )
    options = RouteOptions(proxy=proxy_url(proxy, user="alice"), proxy_auth_schemes=override)
    stream = await open_route_stream(
        Target("https", "127.0.0.1", echo_port, "/"), options, PhaseClock(5)
    )
    await stream.aclose()
    required = [r for r in records if r["event"] == "auth-required"]
    # Either way the second 407 answers a type 1; only the first CONNECT differs.
    assert [r["credentials"] for r in required] == [override is None, True]
    assert [m["type"] for m in ntlm_messages(records)] == [1, 2, 3]


def reply_407(*challenges: str) -> ProxyReply:
    headers = tuple(("Proxy-Authenticate", value) for value in challenges)
    return ProxyReply("1.1", 407, "Proxy Authentication Required", headers, b"", reusable=True)


class FakeContext:
    """Counts steps; enough to check the state machine without pyspnego."""

    def __init__(self) -> None:
        self.steps = 0

    def step(self, in_token: bytes | None = None) -> bytes | None:
        self.steps += 1
        return b"NTLMSSP\x00" + bytes([self.steps])


def test_strongest_offered_scheme_wins_and_negotiate_yields_without_kerberos() -> None:
    used: list[str] = []

    def factory(credentials: Any, protocol: str, host: str) -> FakeContext:
        used.append(protocol)
        return FakeContext()

    creds = tunnelws.Credentials("alice", "pw")
    offers = ("Basic realm=x", 'Digest realm="r", nonce="n"', "NTLM", "Negotiate")
    no_kerberos = ProxyAuthenticator(
        creds,
        authority="h:443",
        preemptive_basic=False,
        context_factory=factory,
        kerberos_check=lambda c, h: False,
    )
    assert no_kerberos.respond(reply_407(*offers)).startswith("NTLM ")
    assert "no Kerberos ticket" in no_kerberos.notes[0]
    with_kerberos = ProxyAuthenticator(
        creds,
        authority="h:443",
        preemptive_basic=False,
        context_factory=factory,
        kerberos_check=lambda c, h: True,
    )
    assert with_kerberos.respond(reply_407(*offers)).startswith("Negotiate ")
    assert used == ["ntlm", "negotiate"]
    digest_only = ProxyAuthenticator(creds, authority="h:443", schemes=["Digest", "Basic"])
    assert digest_only.initial_authorization() is not None
    assert digest_only.respond(reply_407(*offers)).startswith("Digest ")
    with pytest.raises(ValueError, match="unknown proxy authentication scheme"):
        ProxyAuthenticator(creds, authority="h:443", schemes=["Kerberos5"])


def test_hard_cap_and_attempt_rule() -> None:
    auth = ProxyAuthenticator(
        tunnelws.Credentials("alice", "pw"),
        authority="h:443",
        context_factory=lambda c, p, h: FakeContext(),
        kerberos_check=lambda c, h: False,
    )
    assert auth.initial_authorization() is not None  # attempt 1: preemptive Basic
    assert auth.respond(reply_407("NTLM")).startswith("NTLM ")  # attempt 2, leg 1
    token = base64.b64encode(b"NTLMSSP\x00\x02").decode()
    assert auth.respond(reply_407(f"NTLM {token}")).startswith("NTLM ")  # leg 2
    assert auth.connection_bound
    # A further token-bearing challenge would be a fourth CONNECT: still
    # allowed once (a Negotiate exchange may need it) ...
    assert auth.respond(reply_407(f"NTLM {token}")).startswith("NTLM ")
    # ... but never a fifth, whatever the proxy sends.
    with pytest.raises(tunnelws.ProxyAuthError, match="giving up after 4 CONNECTs"):
        auth.respond(reply_407(f"NTLM {token}"))


def test_no_credentials_and_no_ntlm_user_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NTLM_USER_FILE", raising=False)
    auth = ProxyAuthenticator(None, authority="h:443", kerberos_check=lambda c, h: False)
    with pytest.raises(tunnelws.ProxyAuthError) as info:
        auth.respond(reply_407("NTLM", "Negotiate"))
    assert "no proxy credentials were given" in str(info.value)
    assert "NTLM not usable" in str(info.value)


async def test_credentials_from_ntlm_user_file(
    nursery: trio.Nursery, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No credentials in the URL: pyspnego takes them from NTLM_USER_FILE."""
    echo_port = await start_tcp_echo(nursery)
    proxy, records = await start(nursery, "ntlm")
    users = tmp_path / "ntlm-users"
    users.write_text(f"CORP:alice:{PASSWORD}\n")
    monkeypatch.setenv("NTLM_USER_FILE", str(users))
    assert await echo_through(f"http://{proxy.host}:{proxy.port}", echo_port) == b"ping"
    assert [m["type"] for m in ntlm_messages(records)] == [1, 2, 3]


def test_describe_ntlm_message_ignores_non_ntlm() -> None:
    assert describe_ntlm_message(b"\x60\x06garbage") is None
    assert describe_ntlm_message(b"NTLMSSP\x00\x03\x00\x00\x00") == {"type": "malformed"}
