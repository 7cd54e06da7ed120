"""``tunnelws check`` and ``tunnelws connect`` drive the same CONNECT
negotiation, so for every proxy they must end with the same exit code.

Each row is a proxy configuration: the companion proxy's auth schemes with
right, wrong and missing credentials, close-after-407, port and host policy,
reply quirks and refusals, a silent and a dead proxy, the scripted proxy's
byte-level modes, and ``--proxy-auth-scheme`` restrictions. Both commands run
as real subprocesses, side by side, against the origin test server.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest
import trio

from scripted_proxy import ScriptedProxy, Step
from tunnelws_testnet.companion import ProxyConfig, ReplyQuirks, serve_proxy
from tunnelws_testnet.origin import OriginAddresses

USER, PASSWORD = "alice", "s3cret:p@ss"
NTLM_USER, NTLM_PASSWORD = "CORP\\alice", "ntlm-s3cret"
TIMEOUT = "2"

OK, CONFIG, PROXY_CONNECT, PROXY_AUTH, REFUSED, PROTOCOL, HANDSHAKE, TIMED_OUT = (
    0,
    3,
    5,
    6,
    7,
    8,
    10,
    11,
)

DIGEST_407 = (
    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
    b'Proxy-Authenticate: Digest realm="x", nonce="abc", qop="auth"\r\n'
    b"Content-Length: 0\r\n\r\n"
)
CHALLENGE_407 = (
    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
    b'Proxy-Authenticate: Basic realm="x"\r\nContent-Length: 0\r\n\r\n'
)


@dataclass(frozen=True)
class Row:
    """A proxy to start (companion options, a script, or none at all) and
    what the client is given; ``expected`` is the exit code both must give."""

    id: str
    expected: int
    companion: dict[str, Any] | None = None
    script: tuple[Step, ...] = ()
    dead: bool = False
    credentials: tuple[str, str] | None = None
    cli: tuple[str, ...] = field(default=())


def _auth(scheme: str, **more: Any) -> dict[str, Any]:
    user, password = (
        (NTLM_USER, NTLM_PASSWORD)
        if scheme in ("ntlm", "negotiate")
        else (
            USER,
            PASSWORD,
        )
    )
    return {"auth": (user, password), "auth_scheme": scheme, **more}


def _right(scheme: str) -> tuple[str, str]:
    return (NTLM_USER, NTLM_PASSWORD) if scheme in ("ntlm", "negotiate") else (USER, PASSWORD)


def _wrong(scheme: str) -> tuple[str, str]:
    return (_right(scheme)[0], "wrong-password")


ROWS = [
    Row("open", OK, companion={}),
    *(
        row
        for scheme in ("basic", "digest", "ntlm", "negotiate")
        for row in (
            Row(f"{scheme}-right", OK, companion=_auth(scheme), credentials=_right(scheme)),
            Row(f"{scheme}-wrong", PROXY_AUTH, companion=_auth(scheme), credentials=_wrong(scheme)),
        )
    ),
    Row("basic-missing", PROXY_AUTH, companion=_auth("basic")),
    Row("ntlm-missing", PROXY_AUTH, companion=_auth("ntlm")),
    Row(
        "digest-close-after-407",
        OK,
        companion=_auth("digest", close_after_407=True),
        credentials=_right("digest"),
    ),
    # NTLM cannot move to a new connection mid-handshake: an auth error, not a loop.
    Row(
        "ntlm-close-after-407",
        PROXY_AUTH,
        companion=_auth("ntlm", close_after_407=True),
        credentials=_right("ntlm"),
    ),
    Row("ports-443-only", REFUSED, companion={"allow_ports": frozenset({443})}),
    Row("host-denied", REFUSED, companion={"deny_hosts": ("127.0.0.1",)}),
    Row("host-denied-502", REFUSED, companion={"deny_hosts": ("127.0.0.1",), "deny_status": 502}),
    Row("reply-502", REFUSED, companion={"quirks": ReplyQuirks(reply_status=502)}),
    *(
        Row(f"quirk-{name}", OK, companion={"quirks": ReplyQuirks(**{name: True})})
        for name in ("http10", "connection_close", "content_length", "transfer_encoding", "dribble")
    ),
    Row("quirk-garbage", PROTOCOL, companion={"quirks": ReplyQuirks(garbage=True)}),
    Row("quirk-close", PROTOCOL, companion={"quirks": ReplyQuirks(close_without_reply=True)}),
    Row("quirk-huge-headers", PROTOCOL, companion={"quirks": ReplyQuirks(huge_headers=True)}),
    Row("silent", TIMED_OUT, companion={"quirks": ReplyQuirks(never_reply=True)}),
    Row("dead", PROXY_CONNECT, dead=True),
    Row("script-101", PROTOCOL, script=(Step(b"HTTP/1.1 101 Switching Protocols\r\n\r\n"),)),
    Row("script-truncated", PROTOCOL, script=(Step(b"HTTP/1.1 200 Conn", then="close"),)),
    Row("script-bad-header", PROTOCOL, script=(Step(b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n"),)),
    Row(
        "script-407-keepalive-no-credentials",
        PROXY_AUTH,
        script=(Step(CHALLENGE_407, then="next"),),
    ),
    Row(
        "script-407-then-garbage",
        PROTOCOL,
        script=(Step(DIGEST_407, then="next"), Step(b"\x16\x03\x01garbage", then="close")),
        credentials=(USER, PASSWORD),
    ),
    Row(
        "script-tunnel-then-close",
        HANDSHAKE,
        script=(Step(b"HTTP/1.1 200 OK\r\n\r\n", then="close"),),
    ),
    Row(
        "script-dribbled-with-piggyback-404",
        HANDSHAKE,
        script=(
            Step(
                b"HTTP/1.1 200 OK\r\n\r\n",
                dribble=True,
                piggyback=b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
                then="close",
            ),
        ),
    ),
    Row(
        "scheme-digest-only-on-basic-proxy",
        PROXY_AUTH,
        companion=_auth("basic"),
        credentials=_right("basic"),
        cli=("--proxy-auth-scheme", "digest"),
    ),
    Row(
        "scheme-basic-only-on-ntlm-proxy",
        PROXY_AUTH,
        companion=_auth("ntlm"),
        credentials=_right("ntlm"),
        cli=("--proxy-auth-scheme", "basic"),
    ),
    Row(
        "scheme-digest-allowed",
        OK,
        companion=_auth("digest"),
        credentials=_right("digest"),
        cli=("--proxy-auth-scheme", "digest"),
    ),
    Row(
        "scheme-ntlm-allowed",
        OK,
        companion=_auth("negotiate"),
        credentials=_right("negotiate"),
        cli=("--proxy-auth-scheme", "negotiate", "--proxy-auth-scheme", "ntlm"),
    ),
    Row("scheme-unknown", CONFIG, companion={}, cli=("--proxy-auth-scheme", "kerberos5")),
]


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _proxy_url(nursery: trio.Nursery, row: Row) -> str:
    if row.dead:
        return f"http://127.0.0.1:{_closed_port()}"
    if row.script:
        scripted = ScriptedProxy(list(row.script))
        await nursery.start(scripted.serve)
        return scripted.url
    assert row.companion is not None
    running = await nursery.start(serve_proxy, ProxyConfig(**row.companion))
    url: str = running.url
    return url


async def _run(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(60):
        return await trio.run_process(
            [sys.executable, "-m", "tunnelws", *args],
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=_clean_env(),
        )


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
async def test_check_and_connect_agree(
    row: Row, nursery: trio.Nursery, origin: OriginAddresses
) -> None:
    results: dict[str, subprocess.CompletedProcess[bytes]] = {}

    async def run(command: str, *extra: str) -> None:
        # A proxy each: a script's steps are consumed by whoever asks first.
        proxy = await _proxy_url(nursery, row)
        if row.credentials is not None:
            user, password = (quote(part, safe="") for part in row.credentials)
            proxy = proxy.replace("://", f"://{user}:{password}@", 1)
        options = ("--proxy", proxy, "--connect-timeout", TIMEOUT, *row.cli, *extra)
        results[command] = await _run(command, origin.ws_url(), *options)

    async with trio.open_nursery() as both:
        both.start_soon(run, "connect")
        both.start_soon(run, "check", "--no-direct-compare")
    connect, check = results["connect"], results["check"]
    shown = (
        f"connect: {connect.stderr.decode()!r}\n"
        f"check: {check.stdout.decode()}{check.stderr.decode()}"
    )
    assert connect.returncode == row.expected, shown
    assert check.returncode == connect.returncode, shown
    # Neither command may print the password, whatever the outcome.
    for result in (connect, check):
        output = result.stdout + result.stderr
        for secret in (PASSWORD, NTLM_PASSWORD, quote(PASSWORD, safe="")):
            assert secret.encode() not in output


async def test_check_names_the_closed_ntlm_handshake(
    nursery: trio.Nursery, origin: OriginAddresses
) -> None:
    """The drift this file guards against: ``check`` once answered the NTLM
    challenge on a new connection and blamed the credentials."""
    from tunnelws import CheckOptions, run_check

    proxy = await nursery.start(serve_proxy, ProxyConfig(**_auth("ntlm", close_after_407=True)))
    options = CheckOptions(proxy=proxy.url, proxy_auth=_right("ntlm"), connect_timeout=3)
    report = await run_check(origin.ws_url(), options)
    failed = report.steps[-1]
    assert failed.name == "connect" and failed.diagnosis is not None
    assert failed.diagnosis.cause == "auth-handshake-closed"
    assert "closed the connection in the middle of the NTLM handshake" in failed.diagnosis.message
    assert report.exit_code == PROXY_AUTH
