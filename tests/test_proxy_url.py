"""ProxyURL parsing, defaults, and redaction of credentials everywhere."""

from __future__ import annotations

import pickle
from urllib.parse import quote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tunnelws._errors import ProxyConfigError
from tunnelws._proxy_url import ProxyURL, redact_proxy_value

SECRET = "s3cr3t-Pa55"


@pytest.mark.parametrize(
    ("value", "scheme", "host", "port", "authority"),
    [
        ("proxy.corp:3128", "http", "proxy.corp", 3128, "proxy.corp:3128"),
        ("proxy.corp", "http", "proxy.corp", 80, "proxy.corp:80"),
        ("http://proxy.corp", "http", "proxy.corp", 80, "proxy.corp:80"),
        ("https://proxy.corp", "https", "proxy.corp", 443, "proxy.corp:443"),
        ("socks5://proxy.corp", "socks5", "proxy.corp", 1080, "proxy.corp:1080"),
        ("socks5h://proxy.corp:9050", "socks5h", "proxy.corp", 9050, "proxy.corp:9050"),
        ("HTTP://Proxy.CORP.:8080/", "http", "proxy.corp", 8080, "proxy.corp:8080"),
        ("http://[::1]:8080", "http", "::1", 8080, "[::1]:8080"),
        ("http://[2001:DB8::1]", "http", "2001:db8::1", 80, "[2001:db8::1]:80"),
        ("http://192.0.2.7:3128", "http", "192.0.2.7", 3128, "192.0.2.7:3128"),
        ("http://bücher.example:3128", "http", "xn--bcher-kva.example", 3128, None),
        ("http://proxy.corp:", "http", "proxy.corp", 80, None),  # empty port: default
        ("  http://proxy.corp:3128  ", "http", "proxy.corp", 3128, None),  # env padding
        ("http://proxy_internal.corp:3128", "http", "proxy_internal.corp", 3128, None),
    ],
)
def test_parse_valid(value: str, scheme: str, host: str, port: int, authority: str | None) -> None:
    proxy = ProxyURL.parse(value, source="https_proxy")
    assert (proxy.scheme, proxy.host, proxy.port) == (scheme, host, port)
    assert proxy.username is None and proxy.password is None
    if authority is not None:
        assert proxy.authority == authority
    assert proxy.secure == (scheme == "https")


@pytest.mark.parametrize(
    ("value", "username", "password"),
    [
        ("http://bob:hunter2@proxy:3128", "bob", "hunter2"),
        ("http://bob@proxy:3128", "bob", None),
        ("http://bob:@proxy:3128", "bob", ""),
        ("http://:tok@proxy:3128", "", "tok"),
        ("http://@proxy:3128", None, None),
        ("http://b%40corp:p%40ss%3Aw@proxy", "b@corp", "p@ss:w"),
        ("http://bob:p%2Fss%23x@proxy", "bob", "p/ss#x"),
        ("http://bob:caf%C3%A9@proxy", "bob", "café"),
        # Unencoded reserved characters in a password: split at the last '@'.
        ("http://bob:p@ss/w#rd@proxy:3128", "bob", "p@ss/w#rd"),
        ("http://DOMAIN%5Cbob:pw@proxy", "DOMAIN\\bob", "pw"),
        ("bob:pa://ss@proxy", "bob", "pa://ss"),  # "://" inside a password
    ],
)
def test_credentials_are_percent_decoded(
    value: str, username: str | None, password: str | None
) -> None:
    proxy = ProxyURL.parse(value, source="proxy argument")
    assert (proxy.username, proxy.password) == (username, password)
    assert proxy.host == "proxy"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "empty value"),
        ("   ", "empty value"),
        ("ftp://proxy:21", "unsupported proxy scheme 'ftp'"),
        ("socks4://proxy:1080", "unsupported proxy scheme 'socks4'"),
        ("socks://proxy:1080", "unsupported proxy scheme 'socks'"),
        ("1http://proxy", "malformed scheme"),
        ("http://", "no host"),
        ("http://:3128", "no host"),
        ("http://user:pw@", "no host"),
        ("http://proxy:0", "bad port '0'"),
        ("http://proxy:65536", "bad port '65536'"),
        ("http://proxy:-1", "bad port"),
        ("http://proxy:80a", "bad port"),
        ("http://proxy:٣١٢٨", "bad port"),  # non-ASCII digits
        ("http://proxy/path", "no path, query or fragment"),
        ("http://proxy:3128/?x=1", "no path, query or fragment"),
        ("http://proxy#frag", "no path, query or fragment"),
        ("http://::1:3128", "must be in brackets"),
        ("http://[::1", "unclosed '['"),
        ("http://[::1]x", "unexpected text after ']'"),
        ("http://[proxy.corp]:3128", "only for IPv6"),
        ("http://pro xy:3128", "whitespace or control"),
        ("http://proxy\n:3128", "whitespace or control"),
        ("http://bob:%zz@proxy", "invalid percent-encoding"),
        ("http://bob:%ff@proxy", "not valid UTF-8"),
        ("http://bo/b:pw@proxy", "unexpected character in user name"),
        ("http://192.0.2.7%eth0:3128", "bracketed IPv6 zone"),
        ("http://exa!mple.com", "invalid host name"),
    ],
)
def test_parse_invalid(value: str, reason: str) -> None:
    with pytest.raises(ProxyConfigError) as info:
        ProxyURL.parse(value, source="HTTPS_PROXY")
    message = str(info.value)
    assert reason in message
    assert "HTTPS_PROXY" in message
    assert info.value.source == "HTTPS_PROXY"
    assert info.value.exit_code == 3
    assert info.value.phase == "route"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"http://bob:{SECRET}@proxy.corp:3128", "http://bob:***@proxy.corp:3128"),
        (f"https://bob:{SECRET}@proxy.corp", "https://bob:***@proxy.corp:443"),
        ("http://bob@proxy.corp:3128", "http://bob@proxy.corp:3128"),
        ("http://proxy.corp:3128", "http://proxy.corp:3128"),
        (f"http://b%40corp:{SECRET}@[::1]:8080", "http://b%40corp:***@[::1]:8080"),
        (f"http://:{SECRET}@proxy", "http://:***@proxy:80"),
    ],
)
def test_redacted_str_and_repr(value: str, expected: str) -> None:
    proxy = ProxyURL.parse(value, source="proxy argument")
    assert proxy.redacted() == expected
    assert str(proxy) == expected
    assert repr(proxy) == f"ProxyURL({expected!r})"
    for shown in (str(proxy), repr(proxy), repr([proxy]), f"{proxy}", f"{proxy!r}"):
        assert SECRET not in shown


def test_redacted_form_parses_back_to_the_same_place() -> None:
    proxy = ProxyURL.parse("http://b%40c%3Ad:pw@proxy.corp:3128", source="proxy argument")
    again = ProxyURL.parse(proxy.redacted(), source="proxy argument")
    assert (again.username, again.host, again.port) == ("b@c:d", "proxy.corp", 3128)


@pytest.mark.parametrize(
    "value",
    [
        f"ftp://bob:{SECRET}@proxy",
        f"http://bob:{SECRET}@proxy:99999",
        f"http://bob:{SECRET}@proxy/path",
        f"http://bob:{SECRET}@",
        f"http://bob:{SECRET}@[::1",
        f"http://bob:{SECRET}@exa!mple",
        f"bob:{SECRET}@proxy:bad",
        f"http://bob:{SECRET}@proxy:3128 ",  # stripped, then valid: see below
        f"http://bob:{SECRET}%zz@proxy",
        f"http://bob:{SECRET}/x@proxy/x",
        # No '@' at all: "user:password" would otherwise be shown as host:port.
        f"http://bob:{SECRET}",
        f"bob:{SECRET}",
        f"bob:x://{SECRET}@proxy:bad",
        f"bob:{SECRET}://x@proxy:bad",
    ],
)
def test_password_never_in_error_messages(value: str) -> None:
    try:
        proxy = ProxyURL.parse(value, source="https_proxy")
    except ProxyConfigError as exc:
        assert SECRET not in str(exc)
        assert SECRET not in repr(exc)
        assert SECRET not in str(exc.args)
    else:
        assert proxy.password == SECRET
        assert SECRET not in repr(proxy)


def test_equality_and_hash_ignore_nothing_but_stay_usable() -> None:
    a = ProxyURL.parse("http://bob:pw1@proxy:3128", source="x")
    b = ProxyURL.parse("http://bob:pw2@proxy:3128", source="x")
    assert a != b  # different credentials are different proxies
    assert a == ProxyURL.parse("bob:pw1@PROXY:3128", source="x")
    assert len({a, b}) == 2
    assert pickle.loads(pickle.dumps(a)) == a


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"http://bob:{SECRET}@proxy:3128", "http://bob:***@proxy:3128"),
        (f"bob:{SECRET}@proxy", "bob:***@proxy"),
        (f"http://bob:p@{SECRET}@proxy", "http://bob:***@proxy"),
        ("http://bob@proxy", "http://bob@proxy"),
        ("proxy:3128", "proxy:3128"),
        ("http://proxy:3128/path", "http://proxy:3128/path"),
        (f"bob:{SECRET}", "bob:***"),
        (f"http://bob:{SECRET}/x", "http://bob:***"),
        ("http://[::1]:8080", "http://[::1]:8080"),
    ],
)
def test_redact_raw_values(value: str, expected: str) -> None:
    assert redact_proxy_value(value) == expected


PASSWORD = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x2FF, exclude_characters="\x7f"),
    min_size=8,
    max_size=30,
)


@given(password=PASSWORD, suffix=st.sampled_from(["", ":3128", ":bad", "/x", ":1/?#"]))
def test_percent_encoded_passwords_round_trip_and_stay_hidden(password: str, suffix: str) -> None:
    value = f"http://bob:{quote(password, safe='')}@proxy.corp{suffix}"
    assume(password not in value.replace(quote(password, safe=""), ""))
    assume(password not in "https_proxy")  # the message names the variable
    try:
        proxy = ProxyURL.parse(value, source="https_proxy")
    except ProxyConfigError as exc:
        assert password not in str(exc)
    else:
        assert proxy.password == password
        assert password not in repr(proxy) and password not in str(proxy)


@given(password=PASSWORD, suffix=st.sampled_from(["", ":3128", ":bad", "/x", "#f"]))
def test_raw_passwords_are_hidden_even_when_unparseable(password: str, suffix: str) -> None:
    for value in (f"http://bob:{password}@proxy.corp{suffix}", f"bob:{password}@proxy{suffix}"):
        assume(password not in value.replace(password, "", 1))
        # The message rightly names the variable; a password that is part of
        # that name ("https_pr") would be "found" without leaking.
        assume(password not in "https_proxy")
        try:
            ProxyURL.parse(value, source="https_proxy")
        except ProxyConfigError as exc:
            assert password not in str(exc)
        assert password not in redact_proxy_value(value)
