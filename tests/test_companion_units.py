"""Pure parts of the companion proxy: request heads, auth, policy, replies, toxics."""

from __future__ import annotations

import base64
import hashlib
import random

import pytest

from tunnelws_testnet.companion import (
    Authenticator,
    BadRequest,
    HostRules,
    Policy,
    ReplyQuirks,
    RequestHeadParser,
    Toxics,
)
from tunnelws_testnet.companion._auth import parse_auth_params
from tunnelws_testnet.companion._forward import rewrite_request
from tunnelws_testnet.companion._quirks import connect_success
from tunnelws_testnet.companion._request import parse_absolute_url, parse_authority
from tunnelws_testnet.companion._toxics import Slicer, TokenBucket


def test_parser_handles_one_byte_feeds_and_keeps_pipelined_bytes() -> None:
    data = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01"
    parser = RequestHeadParser()
    heads = [parser.feed(data[i : i + 1]) for i in range(len(data) - 3)]
    head = next(h for h in heads if h is not None)
    assert heads.index(head) == len(data) - 4  # complete only at the final blank line
    assert (head.method, head.target, head.get("HOST")) == (
        "CONNECT",
        "example.com:443",
        "example.com:443",
    )
    fresh = RequestHeadParser()
    fresh.feed(data)
    assert fresh.leftover == b"\x16\x03\x01"


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"\x16\x03\x01\x02\x00\x01\x00", 400),  # a TLS ClientHello sent to a plain proxy
        (b"CONNECT  example.com:443 HTTP/1.1\r\n\r\n", 400),
        (b"CONNECT example.com:443 HTTP/2.0\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"a" * 70000, 431),
    ],
)
def test_parser_rejects_with_the_status_a_proxy_sends(data: bytes, status: int) -> None:
    with pytest.raises(BadRequest) as caught:
        RequestHeadParser().feed(data)
    assert caught.value.status == status


def test_authority_and_url_parsing() -> None:
    assert parse_authority("[::1]:8443") == ("::1", 8443)
    assert parse_authority("Example.COM.:443") == ("example.com", 443)
    assert parse_absolute_url("http://h:8080/a?b=1") == ("h", 8080, "/a?b=1")
    assert parse_absolute_url("http://h") == ("h", 80, "/")
    for bad in ("example.com", "::1:443", "h:0", "h:70000", "[::1]x:1", "u@h:1"):
        with pytest.raises(BadRequest):
            parse_authority(bad)
    with pytest.raises(BadRequest):
        parse_absolute_url("https://h/")


def test_basic_auth_verifies_and_never_reveals_the_password() -> None:
    auth = Authenticator("alice", "pa:ss wörd")
    token = base64.b64encode("alice:pa:ss wörd".encode()).decode()
    assert auth.verify("CONNECT", "h:1", f"basic {token}").user == "alice"
    wrong = base64.b64encode(b"alice:nope").decode()
    assert not auth.verify("CONNECT", "h:1", f"Basic {wrong}").ok
    assert not auth.verify("CONNECT", "h:1", "Basic !!!").ok
    assert not auth.verify("CONNECT", "h:1", None).ok
    assert "wörd" not in repr(auth)
    assert auth.challenge() == 'Basic realm="tunnelws", charset="UTF-8"'


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_digest_matches_an_independent_rfc7616_computation(algorithm: str) -> None:
    auth = Authenticator("Mufasa", "Circle of Life", scheme="digest", digest_algorithm=algorithm)  # type: ignore[arg-type]
    params = parse_auth_params(auth.challenge().removeprefix("Digest "))
    assert (params["qop"], params["algorithm"]) == ("auth", algorithm)
    h = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}[algorithm]

    def hx(text: str) -> str:
        return h(text.encode()).hexdigest()

    uri, nc, cnonce = "example.com:443", "00000001", "0a4f113b"
    ha1 = hx(f"Mufasa:{params['realm']}:Circle of Life")
    response = hx(f"{ha1}:{params['nonce']}:{nc}:{cnonce}:auth:{hx(f'CONNECT:{uri}')}")
    header = (
        f'Digest username="Mufasa", realm="{params["realm"]}", nonce="{params["nonce"]}", '
        f'uri="{uri}", qop=auth, nc={nc}, cnonce="{cnonce}", response="{response}", '
        f'opaque="{params["opaque"]}", algorithm={algorithm}'
    )
    assert auth.verify("CONNECT", uri, header).ok
    assert not auth.verify("CONNECT", "other:443", header.replace(uri, "other:443")).ok
    assert not auth.verify("CONNECT", uri, header.replace(response, "0" * len(response))).ok
    forged = header.replace(params["nonce"], base64.b64encode(b"1:forged").decode())
    assert auth.verify("CONNECT", uri, forged).reason == "nonce not issued by this proxy"


def test_digest_old_nonce_is_stale_not_wrong() -> None:
    auth = Authenticator("u", "p", scheme="digest", nonce_lifetime=-1)
    params = parse_auth_params(auth.challenge().removeprefix("Digest "))
    response = auth.digest_response("u", "CONNECT", "h:1", params["nonce"], "00000001", "c")
    header = (
        f'Digest username="u", realm="tunnelws", nonce="{params["nonce"]}", uri="h:1", '
        f'qop=auth, nc=00000001, cnonce="c", response="{response}"'
    )
    result = auth.verify("CONNECT", "h:1", header)
    assert (result.ok, result.stale) == (False, True)
    assert "stale=true" in auth.challenge(stale=True)


def test_host_rules_match_on_label_boundaries_and_cidrs() -> None:
    rules = HostRules.parse(["example.com", "10.0.0.0/8", "::1", "*.corp"])
    assert rules.matches("example.com") and rules.matches("a.b.example.com")
    assert not rules.matches("badexample.com")
    assert rules.matches("10.2.3.4") and not rules.matches("11.0.0.1")
    assert rules.matches("::1") and rules.matches("x.corp") and not rules.matches("corp.x")


def test_policy_decisions() -> None:
    policy = Policy(
        allow_ports=frozenset({443}),
        allow_hosts=HostRules.parse(["ok.test"]),
        deny_hosts=HostRules.parse(["bad.ok.test"]),
        deny_status=502,
    )
    assert policy.check("ok.test", 443) is None
    assert policy.check("ok.test", 80) is not None
    refusal = policy.check("bad.ok.test", 443)
    assert refusal is not None and refusal.status == 502
    assert policy.check("other.test", 443) is not None


def test_connect_success_quirks() -> None:
    plain = connect_success(ReplyQuirks())
    assert plain.startswith(b"HTTP/1.1 200 ") and plain.endswith(b"\r\n\r\n")
    odd = connect_success(
        ReplyQuirks(http10=True, connection_close=True, content_length=True, transfer_encoding=True)
    )
    assert odd.startswith(b"HTTP/1.0 200 ")
    for header in (b"Connection: close", b"Content-Length: 1234", b"Transfer-Encoding: chunked"):
        assert header in odd
    assert len(connect_success(ReplyQuirks(huge_headers=True))) > 64 * 1024
    assert ReplyQuirks.from_names(["close-without-reply"]).close_without_reply
    with pytest.raises(ValueError, match="unknown quirk"):
        ReplyQuirks.from_names(["nonsense"])


def test_rewrite_request_strips_credentials_and_optionally_upgrade() -> None:
    head = RequestHeadParser().feed(
        b"GET http://o:8080/echo HTTP/1.1\r\nHost: o:8080\r\nProxy-Authorization: Basic eDp5\r\n"
        b"Connection: Upgrade, X-Hop\r\nUpgrade: websocket\r\nX-Hop: 1\r\n"
        b"Sec-WebSocket-Key: k\r\n\r\n"
    )
    assert head is not None
    passed = rewrite_request(head, "o:8080", "/echo", strip_upgrade=False)
    assert passed.startswith(b"GET /echo HTTP/1.1\r\nHost: o:8080\r\n")
    assert b"Upgrade: websocket" in passed and b"Connection: Upgrade" in passed
    assert b"Proxy-Authorization" not in passed and b"X-Hop" not in passed
    stripped = rewrite_request(head, "o:8080", "/echo", strip_upgrade=True)
    assert b"Upgrade" not in stripped and b"Connection: close" in stripped
    assert b"Via: 1.1 tunnelws-companion" in stripped and b"Sec-WebSocket-Key: k" in stripped


def test_toxic_pieces_are_seeded_and_bounded() -> None:
    data = bytes(1000)
    first = Slicer(1, 16, random.Random(7)).pieces(data)
    assert first == Slicer(1, 16, random.Random(7)).pieces(data)
    assert b"".join(first) == data and all(1 <= len(p) <= 16 for p in first)
    bucket = TokenBucket(1000, now=0.0)
    assert bucket.delay_for(100, 0.0) == 0.0  # within the 0.1 s burst
    assert bucket.delay_for(100, 0.0) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        Toxics(slice_min=4)
    with pytest.raises(ValueError):
        Toxics(reset_chance=2)
