"""Route selection: explicit argument, environment variables, loopback, no_proxy."""

from __future__ import annotations

import pickle
from collections.abc import Mapping

import pytest

from tunnelws._errors import ProxyConfigError
from tunnelws._proxy_url import ProxyURL
from tunnelws._route import (
    AUTO,
    ProxyDecision,
    ProxySetting,
    is_loopback,
    proxy_variable_names,
    resolve_proxy,
)

SECRET = "hunter2-xyz"
P1 = "http://p1.corp:3128"
P2 = "http://p2.corp:3128"
P3 = "http://p3.corp:3128"


def decide(url: str, env: Mapping[str, str], proxy: ProxySetting = AUTO) -> ProxyDecision:
    return resolve_proxy(url, proxy, env=env)


@pytest.mark.parametrize(
    ("url", "env", "expected", "source"),
    [
        # wss:// and https:// read wss_proxy, https_proxy, all_proxy.
        (
            "wss://ws.example",
            {"wss_proxy": P1, "https_proxy": P2, "all_proxy": P3},
            P1,
            "wss_proxy",
        ),
        ("wss://ws.example", {"https_proxy": P2, "all_proxy": P3}, P2, "https_proxy"),
        ("wss://ws.example", {"all_proxy": P3}, P3, "all_proxy"),
        ("wss://ws.example", {"http_proxy": P1}, "DIRECT", None),
        ("wss://ws.example", {"ws_proxy": P1}, "DIRECT", None),
        ("https://ws.example", {"https_proxy": P2, "http_proxy": P1}, P2, "https_proxy"),
        # ws:// and http:// read ws_proxy, http_proxy, all_proxy.
        ("ws://ws.example", {"ws_proxy": P1, "http_proxy": P2, "all_proxy": P3}, P1, "ws_proxy"),
        ("ws://ws.example", {"http_proxy": P2, "all_proxy": P3}, P2, "http_proxy"),
        ("ws://ws.example", {"ALL_PROXY": P3}, P3, "ALL_PROXY"),
        ("ws://ws.example", {"https_proxy": P1, "wss_proxy": P1}, "DIRECT", None),
        ("http://ws.example", {"http_proxy": P2}, P2, "http_proxy"),
        # Lower case before upper case, for every name.
        ("wss://ws.example", {"https_proxy": P1, "HTTPS_PROXY": P2}, P1, "https_proxy"),
        ("wss://ws.example", {"HTTPS_PROXY": P2}, P2, "HTTPS_PROXY"),
        ("wss://ws.example", {"WSS_PROXY": P1, "https_proxy": P2}, P1, "WSS_PROXY"),
        ("ws://ws.example", {"http_proxy": P1, "HTTP_PROXY": P2}, P1, "http_proxy"),
        ("ws://ws.example", {"all_proxy": P1, "ALL_PROXY": P2}, P1, "all_proxy"),
        # Empty (or blank) counts as unset: the next name is used.
        ("wss://ws.example", {"https_proxy": "", "HTTPS_PROXY": P2}, P2, "HTTPS_PROXY"),
        ("wss://ws.example", {"wss_proxy": "  ", "all_proxy": P3}, P3, "all_proxy"),
        ("wss://ws.example", {"https_proxy": ""}, "DIRECT", None),
        # Nothing set.
        ("wss://ws.example", {}, "DIRECT", None),
        # Default ports of proxies, credentials redacted in str().
        ("wss://ws.example", {"https_proxy": "proxy.corp"}, "http://proxy.corp:80", "https_proxy"),
        (
            "wss://ws.example",
            {"https_proxy": "https://p.corp"},
            "https://p.corp:443",
            "https_proxy",
        ),
        (
            "wss://ws.example",
            {"all_proxy": "socks5h://p.corp"},
            "socks5h://p.corp:1080",
            "all_proxy",
        ),
        (
            "wss://ws.example",
            {"https_proxy": f"http://bob:{SECRET}@p.corp:8080"},
            "http://bob:***@p.corp:8080",
            "https_proxy",
        ),
    ],
)
def test_environment_variable_order(
    url: str, env: dict[str, str], expected: str, source: str | None
) -> None:
    decision = decide(url, env)
    assert str(decision) == expected
    assert decision.source == source
    if source is not None:
        assert decision.rule == f"{source} is set (used for {url.split(':')[0]}://)"
    else:
        assert decision.proxy is None
        assert decision.rule == "no proxy variable is set"


def test_considered_lists_names_in_lookup_order_up_to_the_one_used() -> None:
    decision = decide("wss://ws.example", {"ALL_PROXY": P1})
    assert decision.considered == (
        "wss_proxy", "WSS_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
        "no_proxy", "NO_PROXY",
    )  # fmt: skip
    decision = decide("ws://ws.example", {"http_proxy": P1, "no_proxy": "x.example"})
    assert decision.considered == ("ws_proxy", "WS_PROXY", "http_proxy", "no_proxy")
    assert decide("ws://ws.example", {}).considered == proxy_variable_names("ws")


# --- httpoxy -------------------------------------------------------------------


def test_httpoxy_upper_case_http_proxy_ignored_in_cgi() -> None:
    env = {"REQUEST_METHOD": "GET", "HTTP_PROXY": "http://attacker.example:8080"}
    decision = decide("ws://ws.example", env)
    assert str(decision) == "DIRECT"
    assert "HTTP_PROXY" not in decision.considered
    assert "REQUEST_METHOD" in decision.rule and "HTTP_PROXY" in decision.rule
    assert any("httpoxy" in note for note in decision.notes)


def test_httpoxy_falls_through_to_all_proxy() -> None:
    env = {"REQUEST_METHOD": "POST", "HTTP_PROXY": "http://attacker:1", "ALL_PROXY": P3}
    decision = decide("http://ws.example", env)
    assert (str(decision), decision.source) == (P3, "ALL_PROXY")
    assert any("HTTP_PROXY ignored" in note for note in decision.notes)


def test_httpoxy_even_empty_request_method_counts() -> None:
    env = {"REQUEST_METHOD": "", "HTTP_PROXY": "http://attacker:1"}
    assert str(decide("ws://ws.example", env)) == "DIRECT"


def test_httpoxy_lower_case_and_https_still_used_in_cgi() -> None:
    env = {"REQUEST_METHOD": "GET", "http_proxy": P1, "HTTPS_PROXY": P2}
    assert str(decide("ws://ws.example", env)) == P1
    assert str(decide("wss://ws.example", env)) == P2
    # Without REQUEST_METHOD, HTTP_PROXY is an ordinary variable.
    assert str(decide("ws://ws.example", {"HTTP_PROXY": P2})) == P2
    # No note when HTTP_PROXY was not even set.
    assert decide("ws://ws.example", {"REQUEST_METHOD": "GET"}).notes == ()


# --- loopback and no_proxy -------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ws://localhost:8080/",
        "wss://LOCALHOST./",
        "ws://app.localhost/",
        "ws://127.0.0.1:9000/",
        "ws://127.200.1.1/",
        "ws://[::1]:8080/",
        "ws://[::ffff:127.0.0.1]/",
    ],
)
def test_loopback_never_uses_an_environment_proxy(url: str) -> None:
    env = {"ws_proxy": P1, "wss_proxy": P1, "all_proxy": P1}
    decision = decide(url, env)
    assert str(decision) == "DIRECT"
    assert decision.rule == "loopback hosts never use a proxy from the environment"
    assert decision.source is None
    # ... but an explicit proxy argument is honoured even for loopback.
    assert str(decide(url, env, proxy=P2)) == P2


@pytest.mark.parametrize(
    "host", ["localhost.example", "mylocalhost", "128.0.0.1", "::2", "0.0.0.0", "::"]
)
def test_not_loopback(host: str) -> None:
    assert not is_loopback(host)


@pytest.mark.parametrize(
    ("url", "no_proxy", "expected", "rule"),
    [
        ("wss://ws.corp.example/", ".corp.example", "DIRECT",
         "no_proxy entry '.corp.example' matches host 'ws.corp.example'"),
        ("wss://corp.example/", "corp.example", "DIRECT",
         "no_proxy entry 'corp.example' matches host 'corp.example'"),
        ("wss://badcorp.example/", "corp.example", P1, "https_proxy is set (used for wss://)"),
        ("wss://ws.corp.example./", "corp.example.", "DIRECT", None),
        ("wss://bücher.example/", "bücher.example", "DIRECT",
         "no_proxy entry 'bücher.example' matches host 'xn--bcher-kva.example'"),
        ("wss://10.1.2.3/", "10.0.0.0/8", "DIRECT", None),
        ("wss://[fd00::5]:8443/", "fd00::/8", "DIRECT", None),
        ("wss://[2001:db8::1]:8080/", "[2001:db8::1]:8080", "DIRECT", None),
        ("wss://[2001:db8::1]/", "[2001:db8::1]:8080", P1, None),
        ("wss://ws.corp.example:8443/", "ws.corp.example:8443", "DIRECT", None),
        ("wss://ws.corp.example/", "ws.corp.example:8443", P1, None),  # default port 443
        ("wss://any.example/", "*", "DIRECT", "no_proxy entry '*' matches host 'any.example'"),
        ("wss://ws.example/", "*.other", P1, None),
    ],
)  # fmt: skip
def test_no_proxy(url: str, no_proxy: str, expected: str, rule: str | None) -> None:
    decision = decide(url, {"https_proxy": P1, "no_proxy": no_proxy})
    assert str(decision) == expected
    if expected == "DIRECT":
        assert decision.source == "no_proxy"
    if rule is not None:
        assert decision.rule == rule


def test_no_proxy_lower_case_first_and_empty_is_unset() -> None:
    env = {"https_proxy": P1, "no_proxy": "a.example", "NO_PROXY": "b.example"}
    assert str(decide("wss://b.example", env)) == P1  # NO_PROXY shadowed by no_proxy
    env = {"https_proxy": P1, "no_proxy": "", "NO_PROXY": "b.example"}
    decision = decide("wss://b.example", env)
    assert (str(decision), decision.source) == ("DIRECT", "NO_PROXY")


def test_ignored_no_proxy_entries_are_noted() -> None:
    decision = decide("wss://ws.example", {"https_proxy": P1, "no_proxy": "*bad, ok.example"})
    assert str(decision) == P1
    assert decision.notes == (
        "no_proxy entry '*bad' ignored: '*' is only allowed alone or as a leading '*.'",
    )


def test_explicit_proxy_beats_no_proxy_and_environment() -> None:
    env = {"https_proxy": P1, "no_proxy": "*"}
    for setting in (P2, ProxyURL.parse(P2, source="test")):
        decision = decide("wss://ws.example", env, proxy=setting)
        assert (str(decision), decision.source) == (P2, "proxy argument")
        assert decision.rule == "explicit proxy argument"
        assert decision.considered == ()


def test_proxy_none_is_direct_whatever_the_environment() -> None:
    decision = decide("wss://ws.example", {"https_proxy": P1}, proxy=None)
    assert str(decision) == "DIRECT"
    assert decision.rule == "proxy=None: direct"
    assert decision.source == "proxy argument"


def test_default_environment_is_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [*proxy_variable_names("wss"), "no_proxy", "NO_PROXY"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", P3)
    assert str(resolve_proxy("wss://ws.example")) == P3


# --- errors ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["https_proxy", "HTTPS_PROXY", "wss_proxy", "all_proxy"])
def test_bad_environment_value_names_the_variable(name: str) -> None:
    with pytest.raises(ProxyConfigError) as info:
        decide("wss://ws.example", {name: f"ftp://bob:{SECRET}@p.corp"})
    assert info.value.source == name
    assert name in str(info.value)
    assert "ftp" in str(info.value)
    assert SECRET not in str(info.value)


def test_bad_environment_value_is_reported_even_for_bypassed_hosts() -> None:
    env = {"https_proxy": "socks4://p.corp", "no_proxy": "*"}
    with pytest.raises(ProxyConfigError, match="https_proxy"):
        decide("wss://localhost/", env)


def test_bad_value_in_a_variable_that_is_not_used_is_harmless() -> None:
    env = {"https_proxy": P1, "ALL_PROXY": "nonsense://"}
    assert str(decide("wss://ws.example", env)) == P1
    env = {"http_proxy": "ftp://x"}
    assert str(decide("wss://ws.example", env)) == "DIRECT"


def test_bad_explicit_proxy() -> None:
    with pytest.raises(ProxyConfigError) as info:
        decide("wss://ws.example", {}, proxy=f"http://bob:{SECRET}@p.corp:http")
    assert info.value.source == "proxy argument"
    assert "proxy argument" in str(info.value)
    assert SECRET not in str(info.value)
    with pytest.raises(ProxyConfigError):
        decide("wss://ws.example", {}, proxy="")


@pytest.mark.parametrize(
    "url", ["ftp://ws.example", "ws://", "wss://user:pw@ws.example", "ws://ws.example:99999", "x"]
)
def test_bad_target_url_is_a_value_error_not_a_config_error(url: str) -> None:
    with pytest.raises(ValueError) as info:
        decide(url, {"https_proxy": P1})
    assert not isinstance(info.value, ProxyConfigError)


def test_wrong_proxy_type() -> None:
    with pytest.raises(TypeError, match="proxy must be"):
        decide("wss://ws.example", {}, proxy=3128)  # type: ignore[arg-type]


def test_auto_is_a_singleton() -> None:
    assert repr(AUTO) == "AUTO"
    assert type(AUTO)() is AUTO
    assert pickle.loads(pickle.dumps(AUTO)) is AUTO


def test_decision_repr_never_shows_the_password() -> None:
    decision = decide("wss://ws.example", {"https_proxy": f"http://bob:{SECRET}@p.corp"})
    assert decision.proxy is not None and decision.proxy.password == SECRET
    for text in (str(decision), repr(decision), decision.rule):
        assert SECRET not in text
