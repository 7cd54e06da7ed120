"""Proxy authentication: Digest arithmetic, the 407 state machine (challenge parsing:
test_grammar.py)."""

from __future__ import annotations

import base64
import doctest
import hashlib
import re
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path

import pytest
import trio

from peers import run_pproxy
from tunnelws._auth import (
    Credentials,
    ProxyAuthenticator,
    basic_authorization,
    digest_response,
    digest_userhash,
)
from tunnelws._connect import ConnectReplyParser, ProxyReply, build_connect_request
from tunnelws._errors import ProxyAuthError
from tunnelws._grammar import parse_challenges

PASSWORD = "s3cr3t:p@ss"
CREDS = Credentials("alice", PASSWORD)
AUTHORITY = "example.com:443"


def reply_407(*challenges: str, reason: str = "Proxy Authentication Required") -> ProxyReply:
    headers = tuple(("Proxy-Authenticate", value) for value in challenges)
    return ProxyReply("1.1", 407, reason, headers, b"denied", reusable=True)


def digest_fields(header: str) -> dict[str, str]:
    """Split a Digest Proxy-Authorization value into its fields (unquoted)."""
    assert header.startswith("Digest ")
    [challenge] = parse_challenges([header])
    return dict(challenge.params)


# -- Digest arithmetic against published examples -----------------------------------

RFC7616_MD5_SHA256 = {
    "username": "Mufasa",
    "password": "Circle of Life",
    "realm": "http-auth@example.org",
    "method": "GET",
    "uri": "/dir/index.html",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    "nc": "00000001",
    "qop": "auth",
}


def test_rfc7616_example_md5() -> None:  # RFC 7616 section 3.9.1
    assert (
        digest_response(algorithm="MD5", **RFC7616_MD5_SHA256) == "8ca523f5e9506fed4657c9700eebdbec"
    )


def test_rfc7616_example_sha256() -> None:  # RFC 7616 section 3.9.1
    assert (
        digest_response(algorithm="SHA-256", **RFC7616_MD5_SHA256)
        == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    )


def test_rfc2617_example() -> None:  # RFC 2617 section 3.5
    assert (
        digest_response(
            algorithm="MD5",
            username="Mufasa",
            password="Circle Of Life",
            realm="testrealm@host.com",
            method="GET",
            uri="/dir/index.html",
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
            cnonce="0a4f113b",
            nc="00000001",
            qop="auth",
        )
        == "6629fae49393a05397450978507c4ef1"
    )


def test_rfc2069_example_without_qop() -> None:  # RFC 2069 section 2.4
    assert (
        digest_response(
            algorithm="MD5",
            username="Mufasa",
            password="CircleOfLife",
            realm="testrealm@host.com",
            method="GET",
            uri="/dir/index.html",
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
            qop=None,
        )
        == "1949323746fe6a43ef61f9606e7febea"
    )


def test_rfc7616_sha512_256_userhash_example() -> None:
    # RFC 7616 section 3.9.2. The values printed in the RFC are wrong (erratum
    # 4897); these are the corrected ones that independent implementations agree on.
    username = "J\u00e4s\u00f8n Doe"
    assert (
        digest_userhash("SHA-512-256", username, "api@example.org")
        == "793263caabb707a56211940d90411ea4a575adeccb7e360aeb624ed06ece9b0b"
    )
    assert (
        digest_response(
            algorithm="SHA-512-256",
            username=username,
            password="Secret, or not?",
            realm="api@example.org",
            method="GET",
            uri="/doe.json",
            nonce="5TsQWLVdgBdmrQ0XsxbDODV+57QdFR34I9HAbC/RVvkK",
            cnonce="NTg6RKcb9boFIAS3KrFK9BGeh+iDa/sm6jUMp2wds69v",
        )
        == "3798d4131c277846293534c3edc11bd8a5e4cdcbff78b05db9d95eeb1cec68a5"
    )


def test_sess_and_auth_int_variants_differ_from_plain() -> None:
    common = {**RFC7616_MD5_SHA256, "qop": "auth"}
    plain = digest_response(algorithm="MD5", **common)
    sess = digest_response(algorithm="MD5-sess", **common)
    auth_int = digest_response(algorithm="MD5", **{**common, "qop": "auth-int"})
    assert len({plain, sess, auth_int}) == 3
    # -sess depends on the cnonce through HA1.
    assert sess != digest_response(algorithm="MD5-sess", **{**common, "cnonce": "other"})


def test_unknown_algorithm_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unsupported Digest algorithm 'SHA-1'"):
        digest_response(algorithm="SHA-1", **RFC7616_MD5_SHA256)


# -- credentials never leak -------------------------------------------------------


def test_credentials_repr_hides_the_password() -> None:
    for text in (repr(CREDS), str(CREDS), f"{CREDS}", repr([CREDS])):
        assert PASSWORD not in text
        assert "alice" in text and "***" in text


def test_credentials_reject_a_colon_in_the_user_name() -> None:
    with pytest.raises(ValueError, match="contains ':'") as info:
        Credentials("dom:alice", PASSWORD)
    assert PASSWORD not in str(info.value)


def test_authenticator_repr_hides_the_password() -> None:
    auth = ProxyAuthenticator(CREDS, authority=AUTHORITY)
    auth.initial_authorization()
    assert PASSWORD not in repr(auth)
    assert basic_authorization(CREDS).split()[1] not in repr(auth)


# -- the state machine ---------------------------------------------------------------


def assert_clean(error: ProxyAuthError, *secrets: str) -> None:
    """No credential in the message, nor in anything the error carries."""
    for text in (str(error), repr(error), repr(error.headers), repr(error.body), *error.args):
        for secret in (PASSWORD, *secrets):
            assert secret not in text


def test_without_credentials_no_header_then_a_clear_error() -> None:
    auth = ProxyAuthenticator(None, authority=AUTHORITY)
    assert auth.initial_authorization() is None
    with pytest.raises(ProxyAuthError) as info:
        auth.respond(reply_407('Basic realm="corp"'))
    error = info.value
    assert "no proxy credentials were given" in str(error)
    assert "proxy_auth=(USER, PASSWORD)" in str(error) and "percent-encod" in str(error)
    assert (error.status, error.schemes, error.body, error.category) == (
        407,
        ["Basic"],
        b"denied",
        "proxy-auth",
    )
    assert error.headers == [("Proxy-Authenticate", 'Basic realm="corp"')]
    assert auth.scheme_used is None


def test_preemptive_basic_then_basic_407_means_rejected() -> None:
    auth = ProxyAuthenticator(CREDS, authority=AUTHORITY)
    first = auth.initial_authorization()
    assert first == "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    assert auth.scheme_used == "Basic"
    with pytest.raises(ProxyAuthError) as info:
        auth.respond(reply_407('Basic realm="corp"'))
    assert "rejected the Basic credentials for user 'alice'" in str(info.value)
    assert_clean(info.value, first.split()[1])


def test_basic_after_a_challenge_when_not_preemptive() -> None:
    auth = ProxyAuthenticator(CREDS, authority=AUTHORITY, preemptive_basic=False)
    assert auth.initial_authorization() is None
    assert auth.respond(reply_407('Basic realm="corp"')) == basic_authorization(CREDS)
    assert auth.scheme_used == "Basic"
    with pytest.raises(ProxyAuthError, match="rejected the Basic credentials for user 'alice'"):
        auth.respond(reply_407('Basic realm="corp"'))


def test_preemptive_basic_then_digest_challenge_gets_a_digest_answer() -> None:
    auth = ProxyAuthenticator(CREDS, authority=AUTHORITY, cnonce_factory=lambda: "c-nonce")
    assert auth.initial_authorization() is not None
    answer = auth.respond(
        reply_407('Digest realm="corp", qop="auth", nonce="n0nce", opaque="op\\"q", algorithm=MD5')
    )
    assert auth.scheme_used == "Digest"
    fields = digest_fields(answer)
    assert fields == {
        "username": "alice",
        "realm": "corp",
        "nonce": "n0nce",
        "uri": AUTHORITY,
        "algorithm": "MD5",
        "response": digest_response(
            algorithm="MD5",
            username="alice",
            password=PASSWORD,
            realm="corp",
            method="CONNECT",
            uri=AUTHORITY,
            nonce="n0nce",
            cnonce="c-nonce",
            qop="auth",
        ),
        "opaque": 'op"q',
        "qop": "auth",
        "nc": "00000001",
        "cnonce": "c-nonce",
    }
    assert PASSWORD not in answer


def test_second_407_after_the_answer_is_final() -> None:
    auth = ProxyAuthenticator(CREDS, authority=AUTHORITY)
    connects = 1
    auth.initial_authorization()
    challenge = reply_407('Digest realm="corp", nonce="n2", qop="auth"')
    auth.respond(challenge)
    connects += 1
    with pytest.raises(ProxyAuthError) as info:
        auth.respond(challenge)
        connects += 1  # never reached: there is no third CONNECT
    assert connects == 2
    assert "rejected the Digest credentials for user 'alice'" in str(info.value)
    assert info.value.schemes == ["Digest"]
    assert_clean(info.value)
    # And it stays final.
    with pytest.raises(ProxyAuthError):
        auth.respond(challenge)


def test_stale_nonce_on_the_second_407_is_explained() -> None:
    auth = ProxyAuthenticator(CREDS, authority=AUTHORITY, preemptive_basic=False)
    auth.respond(reply_407('Digest realm="r", nonce="a", qop="auth"'))
    with pytest.raises(ProxyAuthError, match="nonce as stale"):
        auth.respond(reply_407('Digest realm="r", nonce="b", qop="auth", stale=TRUE'))


def test_unsupported_schemes_are_listed() -> None:
    auth = ProxyAuthenticator(CREDS, authority=AUTHORITY)
    auth.initial_authorization()
    with pytest.raises(ProxyAuthError) as info:
        auth.respond(reply_407("Bearer", "Mutual", "Bearer"))
    assert "no supported authentication scheme: Bearer, Mutual" in str(info.value)
    assert "supports Negotiate, NTLM, Digest, Basic" in str(info.value)
    assert info.value.schemes == ["Bearer", "Mutual"]


def test_407_without_challenge() -> None:
    auth = ProxyAuthenticator(CREDS, authority=AUTHORITY, preemptive_basic=False)
    with pytest.raises(ProxyAuthError, match="without a usable Proxy-Authenticate challenge"):
        auth.respond(reply_407())


def test_digest_with_only_unknown_algorithms_is_unsupported() -> None:
    auth = ProxyAuthenticator(CREDS, authority=AUTHORITY, preemptive_basic=False)
    with pytest.raises(ProxyAuthError, match="algorithm SHA-1, SHA3-256"):
        auth.respond(
            reply_407(
                'Digest realm="r", nonce="n", algorithm=SHA-1',
                'Digest realm="r", nonce="n", algorithm=SHA3-256',
            )
        )


def test_respond_needs_a_407() -> None:
    auth = ProxyAuthenticator(CREDS, authority=AUTHORITY)
    with pytest.raises(ValueError, match="needs a 407"):
        auth.respond(ProxyReply("1.1", 403, "Forbidden", (), b"", reusable=False))


def answer_to(*challenges: str, username: str = "alice") -> dict[str, str]:
    auth = ProxyAuthenticator(
        Credentials(username, PASSWORD),
        authority=AUTHORITY,
        cnonce_factory=lambda: "cn",
        preemptive_basic=False,
    )
    return digest_fields(auth.respond(reply_407(*challenges)))


@pytest.mark.parametrize(
    ("challenges", "algorithm"),
    [
        (
            [
                'Digest realm="r", nonce="n", qop=auth, algorithm=MD5',
                'Digest realm="r", nonce="n", qop=auth, algorithm=SHA-256',
            ],
            "SHA-256",
        ),
        (
            [
                'Digest realm="r", nonce="n", qop=auth, algorithm=SHA-256-sess',
                'Digest realm="r", nonce="n", qop=auth, algorithm=MD5-sess',
            ],
            "SHA-256-sess",
        ),
        (['Basic realm="r"', 'Digest realm="r", nonce="n", qop=auth'], None),
        (
            [
                'Digest realm="r", nonce="n", qop=auth, algorithm=SHA-1',
                'Digest realm="r", nonce="n", qop=auth, algorithm=md5',
            ],
            "md5",
        ),
        (
            [
                'Digest realm="r", nonce="n", qop=auth, algorithm=SHA-512-256',
                'Digest realm="r", nonce="n", qop=auth, algorithm=SHA-256',
            ],
            "SHA-512-256",
        ),
    ],
)
def test_digest_choice(challenges: list[str], algorithm: str | None) -> None:
    fields = answer_to(*challenges)
    assert fields.get("algorithm") == algorithm
    expected = digest_response(
        algorithm=algorithm or "MD5",
        username="alice",
        password=PASSWORD,
        realm="r",
        method="CONNECT",
        uri=AUTHORITY,
        nonce="n",
        cnonce="cn",
        qop="auth",
    )
    assert fields["response"] == expected


def test_digest_over_basic_even_when_basic_comes_first() -> None:
    auth = ProxyAuthenticator(CREDS, authority=AUTHORITY, preemptive_basic=False)
    assert auth.respond(reply_407('Basic realm="r"', 'Digest realm="r", nonce="n"')).startswith(
        "Digest "
    )


def test_legacy_digest_without_qop() -> None:
    fields = answer_to('Digest realm="r", nonce="n"')
    assert fields == {
        "username": "alice",
        "realm": "r",
        "nonce": "n",
        "uri": AUTHORITY,
        "response": digest_response(
            algorithm="MD5",
            username="alice",
            password=PASSWORD,
            realm="r",
            method="CONNECT",
            uri=AUTHORITY,
            nonce="n",
            qop=None,
        ),
    }


def test_auth_int_when_it_is_the_only_qop() -> None:
    fields = answer_to('Digest realm="r", nonce="n", qop="auth-int"')
    assert fields["qop"] == "auth-int"
    assert fields["response"] == digest_response(
        algorithm="MD5",
        username="alice",
        password=PASSWORD,
        realm="r",
        method="CONNECT",
        uri=AUTHORITY,
        nonce="n",
        cnonce="cn",
        qop="auth-int",
    )


@pytest.mark.parametrize(
    "challenge",
    [
        'Digest realm="r", qop=auth',  # no nonce
        'Digest nonce="n", qop=auth',  # no realm
        'Digest realm="r", nonce="n", qop="auth-conf"',  # no usable qop
        'Digest realm="r", nonce="n", algorithm=MD5-sess',  # -sess needs the qop form
    ],
)
def test_unusable_digest_challenges_are_skipped(challenge: str) -> None:
    auth = ProxyAuthenticator(CREDS, authority=AUTHORITY, preemptive_basic=False)
    assert auth.respond(reply_407(challenge, 'Basic realm="r"')).startswith("Basic ")


def test_realm_and_nonce_are_echoed_exactly() -> None:
    realm, nonce = 'we "quote" \\ things, too', "n/+=="
    escaped = realm.replace("\\", "\\\\").replace('"', '\\"')
    fields = answer_to(f'Digest realm="{escaped}", nonce="{nonce}", qop="auth,auth-int"')
    assert (fields["realm"], fields["nonce"], fields["qop"]) == (realm, nonce, "auth")


def test_userhash() -> None:
    fields = answer_to('Digest realm="r", nonce="n", qop=auth, algorithm=SHA-256, userhash=true')
    assert fields["username"] == digest_userhash("SHA-256", "alice", "r")
    assert fields["userhash"] == "true"
    # The response is still computed over the real user name.
    assert fields["response"] == digest_response(
        algorithm="SHA-256",
        username="alice",
        password=PASSWORD,
        realm="r",
        method="CONNECT",
        uri=AUTHORITY,
        nonce="n",
        cnonce="cn",
        qop="auth",
    )


def test_non_ascii_user_name_uses_username_star() -> None:
    auth = ProxyAuthenticator(
        Credentials("J\u00e4s\u00f8n Doe", PASSWORD),
        authority=AUTHORITY,
        cnonce_factory=lambda: "cn",
        preemptive_basic=False,
    )
    header = auth.respond(reply_407('Digest realm="r", nonce="n", qop=auth, charset=UTF-8'))
    assert "username*=UTF-8''J%C3%A4s%C3%B8n%20Doe," in header
    assert not re.search(r"\busername=", header)


def test_basic_uses_utf8() -> None:
    value = basic_authorization(Credentials("j\u00fcrgen", "p\u00e4ss"))
    assert base64.b64decode(value.split()[1]) == "j\u00fcrgen:p\u00e4ss".encode()


def test_default_cnonce_is_fresh_and_unpredictable() -> None:
    cnonces: set[str] = set()
    for _ in range(3):
        auth = ProxyAuthenticator(CREDS, authority=AUTHORITY, preemptive_basic=False)
        cnonces.add(
            digest_fields(auth.respond(reply_407('Digest realm="r", nonce="n", qop=auth')))[
                "cnonce"
            ]
        )
    assert len(cnonces) == 3 and all(len(c) >= 16 for c in cnonces)


@pytest.mark.parametrize(
    "sequence",
    [
        ["Basic"],
        ["Digest"],
        ["Digest", "Digest"],
        ["Basic", "Basic", "Basic"],
        ["Digest", "Basic", "Digest", "Negotiate"],
    ],
)
@pytest.mark.parametrize("preemptive", [True, False])
def test_never_more_than_two_connects(sequence: Sequence[str], preemptive: bool) -> None:
    """Drive the authenticator like the transport does, against a proxy that always says 407."""
    auth = ProxyAuthenticator(CREDS, authority=AUTHORITY, preemptive_basic=preemptive)
    auth.initial_authorization()
    connects = 1
    challenges = {
        "Basic": 'Basic realm="r"',
        "Digest": 'Digest realm="r", nonce="n", qop=auth',
        "Negotiate": "Negotiate",
    }
    with pytest.raises(ProxyAuthError) as info:
        for scheme in [*sequence] * 3:
            auth.respond(reply_407(challenges[scheme]))
            connects += 1
    assert connects <= 2
    assert_clean(info.value)


def test_docs_examples_are_true() -> None:
    docs = Path(__file__).parent.parent / "docs" / "proxy-auth.md"
    result = doctest.testfile(str(docs), module_relative=False, verbose=False)
    assert result.attempted >= 10 and result.failed == 0


def test_non_ascii_realm_is_hashed_as_the_proxy_sent_it() -> None:
    # The reply parser hands over header values decoded as ISO-8859-1; a proxy
    # that put UTF-8 in its realm must still get a hash over its own bytes.
    realm_bytes = "Zentrale Büro".encode()
    wire = (
        b"HTTP/1.1 407 Proxy Authentication Required\r\n"
        b'Proxy-Authenticate: Digest realm="' + realm_bytes + b'", nonce="n", qop=auth\r\n'
        b"Content-Length: 0\r\n\r\n"
    )
    reply = ConnectReplyParser().feed(wire)
    assert reply is not None
    auth = ProxyAuthenticator(
        CREDS, authority=AUTHORITY, cnonce_factory=lambda: "cn", preemptive_basic=False
    )
    answer = auth.respond(reply)
    # What the proxy computes on its side, from raw bytes.
    ha1 = hashlib.md5(b"alice:" + realm_bytes + b":" + PASSWORD.encode()).hexdigest()
    ha2 = hashlib.md5(f"CONNECT:{AUTHORITY}".encode()).hexdigest()
    expected = hashlib.md5(f"{ha1}:n:00000001:cn:auth:{ha2}".encode()).hexdigest()
    assert digest_fields(answer)["response"] == expected
    # The header goes out with the realm's original bytes.
    request = build_connect_request("example.com", 443, headers=[("Proxy-Authorization", answer)])
    assert b'realm="' + realm_bytes + b'"' in request


# -- against a real proxy (pproxy) ---------------------------------------------------


@pytest.fixture
def pproxy_port(tmp_path: Path) -> Iterator[int]:
    """A pproxy HTTP proxy on loopback demanding Basic alice/PASSWORD on every CONNECT."""
    with run_pproxy(auth=("alice", PASSWORD), tmp_path=tmp_path) as proxy:
        yield proxy.port


async def echo_origin(nursery: trio.Nursery) -> int:
    async def echo(stream: trio.SocketStream) -> None:
        async for data in stream:
            await stream.send_all(data)

    listeners = await nursery.start(partial(trio.serve_tcp, echo, 0, host="127.0.0.1"))
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def send_connect(
    proxy_port: int, target_port: int, authorization: str | None
) -> tuple[ProxyReply, bytes, trio.SocketStream]:
    """One CONNECT on a new connection, driven exactly like the transport does."""
    stream = await trio.open_tcp_stream("127.0.0.1", proxy_port)
    headers = [("Proxy-Authorization", authorization)] if authorization else []
    await stream.send_all(build_connect_request("127.0.0.1", target_port, headers=headers))
    parser = ConnectReplyParser()
    with trio.fail_after(10):
        while True:
            data = await stream.receive_some(65536)
            reply = parser.feed(data) if data else parser.feed_eof()
            if reply is not None:
                return reply, parser.leftover, stream


async def test_pproxy_accepts_preemptive_basic_on_the_first_connect(
    pproxy_port: int, nursery: trio.Nursery
) -> None:
    origin = await echo_origin(nursery)
    auth = ProxyAuthenticator(CREDS, authority=f"127.0.0.1:{origin}")
    reply, leftover, stream = await send_connect(pproxy_port, origin, auth.initial_authorization())
    async with stream:
        assert reply.ok and leftover == b""
        await stream.send_all(b"through the tunnel")
        with trio.fail_after(10):
            assert await stream.receive_some(100) == b"through the tunnel"


async def test_pproxy_407_with_close_then_answer_on_a_new_connection(
    pproxy_port: int, nursery: trio.Nursery
) -> None:
    origin = await echo_origin(nursery)
    auth = ProxyAuthenticator(CREDS, authority=f"127.0.0.1:{origin}", preemptive_basic=False)
    reply, _, stream = await send_connect(pproxy_port, origin, auth.initial_authorization())
    await stream.aclose()
    # pproxy closes after its 407 and frames it by closing: not reusable.
    assert (reply.status, reply.reusable) == (407, False)
    reply, _, stream = await send_connect(pproxy_port, origin, auth.respond(reply))
    async with stream:
        assert reply.ok and auth.scheme_used == "Basic"


@pytest.mark.parametrize(
    ("credentials", "message"),
    [
        (None, "no proxy credentials were given"),
        (Credentials("alice", "wrong-password"), "rejected the Basic credentials for user 'alice'"),
    ],
)
async def test_pproxy_refusals_end_after_one_connect(
    pproxy_port: int, credentials: Credentials | None, message: str
) -> None:
    auth = ProxyAuthenticator(credentials, authority="127.0.0.1:9")
    reply, _, stream = await send_connect(pproxy_port, 9, auth.initial_authorization())
    await stream.aclose()
    with pytest.raises(ProxyAuthError, match=message) as info:
        auth.respond(reply)
    assert info.value.schemes == ["Basic"] and info.value.status == 407
    assert_clean(info.value, "wrong-password")
