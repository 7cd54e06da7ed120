"""The HTTP field-value grammar (``tunnelws._grammar``): tokens, quoted strings,
lists, parameters and challenges; and malformed challenges from a proxy, which
end in a typed error (library) or one line and an exit code (CLI), never a
traceback."""

from __future__ import annotations

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

import tunnelws
from scripted_proxy import ScriptedProxy, Step
from test_cli_connect import clean_env, run_cli
from tunnelws._deflate import NegotiationError, parse_response
from tunnelws._grammar import (
    Challenge,
    GrammarError,
    is_token,
    list_tokens,
    parse_challenges,
    parse_parameters,
    quoted_string,
    split_list,
    token_prefix,
)

# -- tokens, quoted strings, lists ----------------------------------------------------


def test_tokens() -> None:
    assert is_token("Proxy-Authorization") and is_token("!#$%&'*+-.^_`|~09azAZ")
    for text in ("", "a b", "a:b", 'a"', "a,b", "é", "a\tb"):
        assert not is_token(text)
    assert token_prefix("Proxy-Authorization: Basic c2VjcmV0") == "Proxy-Authorization"
    assert token_prefix(":x") == ""


def test_split_list_keeps_quoted_commas_and_drops_empty_elements() -> None:
    assert split_list("gzip, chunked") == ["gzip", "chunked"]
    assert split_list(' , a ,,\tb , "c, d" ,') == ["a", "b", '"c, d"']
    assert split_list(r'"a\", b", c') == [r'"a\", b"', "c"]  # an escaped quote does not end it
    assert split_list(r'"x\\", y') == [r'"x\\"', "y"]  # an escaped backslash does not escape
    assert split_list("") == [] and split_list(" , ") == []


def test_list_tokens_across_field_lines() -> None:
    assert list_tokens(["Keep-Alive, Upgrade", "close"]) == {"keep-alive", "upgrade", "close"}


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40))
def test_quoted_string_round_trips(value: str) -> None:
    assert parse_parameters(f"p={quoted_string(value)}") == [("p", value)]


# -- parameters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("client_max_window_bits", [("client_max_window_bits", None)]),
        ('A; b=1 ; c="2;3"', [("a", None), ("b", "1"), ("c", "2;3")]),
        ('q="\\"x\\""', [("q", '"x"')]),
        ("; ;a=1;", [("a", "1")]),
        ("a = 1", [("a", "1")]),
        ("a=1; a=2", [("a", "1"), ("a", "2")]),  # duplicates are the caller's business
    ],
)
def test_parse_parameters(text: str, expected: list[tuple[str, str | None]]) -> None:
    assert parse_parameters(text) == expected


@pytest.mark.parametrize(
    "text",
    ["a=", 'a="unterminated', "a=1 2", "=1", "a b", "a=@", "é=1", "a=1, b=2", 'a="x"y'],
)
def test_malformed_parameters_are_grammar_errors(text: str) -> None:
    with pytest.raises(GrammarError) as info:
        parse_parameters(text)
    assert isinstance(info.value, ValueError)
    assert "expected" in str(info.value)


@given(st.text(max_size=60))
def test_parse_parameters_raises_only_grammar_errors(text: str) -> None:
    try:
        params = parse_parameters(text)
    except GrammarError:
        return
    assert all(is_token(name) and name == name.lower() for name, _ in params)


def test_a_malformed_deflate_answer_is_a_negotiation_error() -> None:
    """The extension parameters go through the same grammar; the WebSocket
    handshake turns this error into a HandshakeError."""
    assert parse_response('server_max_window_bits="10"').server_max_window_bits == 10
    with pytest.raises(NegotiationError, match="malformed parameters"):
        parse_response('server_max_window_bits="10')
    with pytest.raises(NegotiationError, match="duplicate parameter"):
        parse_response("server_no_context_takeover; server_no_context_takeover")


# -- challenge parsing --------------------------------------------------------------


def parsed(*values: str) -> list[tuple[str, dict[str, str], str | None]]:
    return [(c.scheme, dict(c.params), c.token68) for c in parse_challenges(values)]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (['Basic realm="proxy"'], [("Basic", {"realm": "proxy"}, None)]),
        # RFC 9110 11.6.1's example: two challenges in one value, escapes, a comma in a quote.
        (
            ['Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple"'],
            [
                ("Newauth", {"realm": "apps", "type": "1", "title": 'Login to "apps"'}, None),
                ("Basic", {"realm": "simple"}, None),
            ],
        ),
        (
            ['Basic realm="a, b", charset="UTF-8"'],
            [("Basic", {"realm": "a, b", "charset": "UTF-8"}, None)],
        ),
        # Several header values, bare schemes, token68.
        (
            ["NTLM", "Negotiate", "Basic realm=x"],
            [("NTLM", {}, None), ("Negotiate", {}, None), ("Basic", {"realm": "x"}, None)],
        ),
        (
            ["Negotiate YIIBhgYGKwYBBQUCoIIBejCCAXag==, Basic realm=p"],
            [("Negotiate", {}, "YIIBhgYGKwYBBQUCoIIBejCCAXag=="), ("Basic", {"realm": "p"}, None)],
        ),
        (["NTLM TlRMTVNTUAACAAAA"], [("NTLM", {}, "TlRMTVNTUAACAAAA")]),
        # Case: keys lower-cased, scheme as sent, values untouched; BWS around "=".
        (
            ['DIGEST Realm = "R" ,NONCE=abc,  QOP="auth"'],
            [("DIGEST", {"realm": "R", "nonce": "abc", "qop": "auth"}, None)],
        ),
        # Empty list elements are fine; the first of a duplicated name wins.
        ([", ,Basic realm=a, realm=b,,"], [("Basic", {"realm": "a"}, None)]),
        (['Basic realm=""'], [("Basic", {"realm": ""}, None)]),
        (['Basic realm="back\\\\slash"'], [("Basic", {"realm": "back\\slash"}, None)]),
        # Garbage is skipped up to the next comma; parsing resumes.
        (["=junk, Basic realm=r"], [("Basic", {"realm": "r"}, None)]),
        (
            ['Basic realm="x" trailing junk, Digest realm=y, nonce=n'],
            [("Basic", {}, None), ("Digest", {"realm": "y", "nonce": "n"}, None)],
        ),
        (['Digest realm="unterminated, nonce=n'], [("Digest", {}, None)]),
        (["@@@, Basic realm=q"], [("Basic", {"realm": "q"}, None)]),
        (["", "   "], []),
    ],
)
def test_parse_challenges(
    values: list[str], expected: list[tuple[str, dict[str, str], str | None]]
) -> None:
    assert parsed(*values) == expected


@given(st.lists(st.text(max_size=80), max_size=4))
def test_parse_challenges_never_raises(values: list[str]) -> None:
    for challenge in parse_challenges(values):
        assert isinstance(challenge, Challenge)
        assert challenge.scheme
        assert all(key == key.lower() for key in challenge.params)


# -- malformed challenges from a proxy -------------------------------------------------

SECRET = "s3cr3t-pw"
NTLM_407 = (
    b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: NTLM\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def reply_407(challenge: bytes) -> bytes:
    return (
        b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: "
        + challenge
        + b"\r\nContent-Length: 0\r\n\r\n"
    )


# (script of 407 replies, words of the ProxyAuthError's message)
MALFORMED = {
    # A scheme with broken parameters is still the scheme: Basic needs none.
    "unterminated quote": ([reply_407(b'Basic realm="corp')], "rejected the Basic credentials"),
    "junk only": ([reply_407(b"=@@@, ,=")], "without a usable"),
    "binary": ([reply_407(b"\xff\xfe\x80 \x81=\x82")], "without a usable"),
    "digest without nonce": ([reply_407(b'Digest realm="r", qop="auth"')], "without realm/nonce"),
    "ntlm token not token68": (
        [NTLM_407, reply_407(b"NTLM @@@not-base64@@@")],
        "rejected the NTLM",
    ),
    "ntlm token not base64": ([NTLM_407, reply_407(b"NTLM abc")], "malformed NTLM challenge"),
    "ntlm token not ntlm": (
        [NTLM_407, reply_407(b"NTLM AAAAAAAAAAAAAAAA")],
        "malformed NTLM challenge token",
    ),
}


async def start_proxy(nursery: trio.Nursery, replies: list[bytes]) -> ScriptedProxy:
    proxy = ScriptedProxy([Step(reply=reply, then="next") for reply in replies])
    await nursery.start(proxy.serve)
    return proxy


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_a_malformed_challenge_is_a_proxy_auth_error(
    nursery: trio.Nursery, case: str
) -> None:
    replies, words = MALFORMED[case]
    proxy = await start_proxy(nursery, replies)
    url = proxy.url.replace("http://", f"http://CORP%5Calice:{SECRET}@")
    with trio.fail_after(10), pytest.raises(tunnelws.ProxyAuthError) as info:
        await tunnelws.open_tunnel("127.0.0.1", 9, proxy=url, connect_timeout=5)
    assert words in str(info.value)
    assert SECRET not in str(info.value)
    # A CONNECT for each scripted reply, plus the Basic answer to the
    # (repeated) last one when Basic was offered: the error ends it, no loop.
    assert len(proxy.requests) == len(replies) + int(words.startswith("rejected the Basic"))


@pytest.mark.parametrize("case", ["unterminated quote", "ntlm token not ntlm"])
async def test_the_cli_reports_a_malformed_challenge_in_one_line(
    nursery: trio.Nursery, case: str
) -> None:
    replies, words = MALFORMED[case]
    proxy = await start_proxy(nursery, replies)
    result = await run_cli(
        *("connect", "ws://127.0.0.1:9/", "--proxy", proxy.url, "--proxy-user", "CORP\\alice"),
        env=clean_env(TUNNELWS_PROXY_PASSWORD=SECRET),  # off the command line
    )
    err = result.stderr.decode()
    assert result.returncode == tunnelws.ProxyAuthError.exit_code, err
    assert words in err and "Traceback" not in err and SECRET not in err
    assert len(err.strip().splitlines()) == 1
