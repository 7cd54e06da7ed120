"""no_proxy parsing and matching: a table for every rule, properties for the matcher."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnelws._no_proxy import NoProxyRules


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "expected"),
    [
        # Names: the name itself and subdomains, on label boundaries only.
        ("example.com", "example.com", 443, "example.com"),
        ("example.com", "ws.example.com", 443, "example.com"),
        ("example.com", "a.b.example.com", 443, "example.com"),
        ("example.com", "badexample.com", 443, None),
        ("example.com", "example.com.evil", 443, None),
        ("example.com", "com", 443, None),
        (".example.com", "example.com", 443, ".example.com"),
        (".example.com", "ws.example.com", 443, ".example.com"),
        (".example.com", "badexample.com", 443, None),
        ("*.example.com", "example.com", 443, "*.example.com"),
        ("*.example.com", "ws.example.com", 443, "*.example.com"),
        ("*.example.com", "badexample.com", 443, None),
        # Case-insensitive, trailing dots ignored on both sides.
        ("EXAMPLE.Com", "ws.example.COM", 443, "EXAMPLE.Com"),
        ("example.com.", "ws.example.com", 443, "example.com."),
        ("example.com", "ws.example.com.", 443, "example.com"),
        # IDNA: entries and hosts compare in punycode form.
        ("bücher.example", "xn--bcher-kva.example", 443, "bücher.example"),
        ("bücher.example", "shop.bücher.example", 443, "bücher.example"),
        ("xn--bcher-kva.example", "bücher.example", 443, "xn--bcher-kva.example"),
        ("BÜCHER.example", "bücher.example", 443, "BÜCHER.example"),
        # '*' alone (as an entry of its own) matches everything.
        ("*", "anything.example", 1, "*"),
        ("*", "192.0.2.1", 1, "*"),
        ("internal, *", "::1", 1, "*"),
        # Separators: commas and/or any whitespace, empty entries skipped.
        ("a.example, b.example", "b.example", 1, "b.example"),
        ("a.example b.example", "b.example", 1, "b.example"),
        ("a.example,,\tb.example\n", "b.example", 1, "b.example"),
        (" , ,", "b.example", 1, None),
        ("", "b.example", 1, None),
        # IP literals: exact only; names never match IP hosts (no DNS).
        ("192.0.2.7", "192.0.2.7", 80, "192.0.2.7"),
        ("192.0.2.7", "192.0.2.70", 80, None),
        ("0.2.7", "192.0.2.7", 80, None),  # not a suffix match on addresses
        ("2001:db8::1", "2001:db8::1", 80, "2001:db8::1"),
        ("2001:DB8:0::1", "2001:db8::1", 80, "2001:DB8:0::1"),
        ("[2001:db8::1]", "2001:db8::1", 80, "[2001:db8::1]"),
        ("2001:db8::1", "[2001:db8::1]", 80, "2001:db8::1"),
        ("example.com", "93.184.215.14", 80, None),
        # CIDR, IPv4 and IPv6; hosts inside the network only.
        ("10.0.0.0/8", "10.200.3.4", 80, "10.0.0.0/8"),
        ("10.0.0.0/8", "11.0.0.1", 80, None),
        ("10.1.2.3/8", "10.9.9.9", 80, "10.1.2.3/8"),  # host bits tolerated
        ("192.168.1.0/24", "192.168.1.255", 80, "192.168.1.0/24"),
        ("192.168.1.0/24", "192.168.2.1", 80, None),
        ("fd00::/8", "fd12:3456::1", 80, "fd00::/8"),
        ("fd00::/8", "fe80::1", 80, None),
        ("10.0.0.0/8", "ten.example", 80, None),
        ("fd00::/8", "10.0.0.1", 80, None),
        # Ports: only that port.
        ("example.com:8443", "ws.example.com", 8443, "example.com:8443"),
        ("example.com:8443", "ws.example.com", 443, None),
        ("192.0.2.7:8080", "192.0.2.7", 8080, "192.0.2.7:8080"),
        ("192.0.2.7:8080", "192.0.2.7", 80, None),
        ("[::1]:8080", "::1", 8080, "[::1]:8080"),
        ("[::1]:8080", "::1", 8081, None),
        ("[2001:db8::1]:443", "2001:db8::1", 443, "[2001:db8::1]:443"),
        # First matching entry (as written) is reported.
        ("example.com, ws.example.com", "ws.example.com", 1, "example.com"),
        ("*x.com, example.com", "ws.example.com", 1, "example.com"),
    ],
)
def test_match_table(no_proxy: str, host: str, port: int, expected: str | None) -> None:
    assert NoProxyRules.parse(no_proxy).match(host, port) == expected


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("*x.com", "'*' is only allowed alone"),
        ("ex*mple.com", "'*' is only allowed alone"),
        ("*.*.example.com", "'*' is only allowed alone"),
        ("a..b", "empty label"),
        ("..example.com", "empty label"),
        (".", "empty name"),
        ("*.", "empty name"),
        ("example.com:0", "bad port"),
        ("example.com:99999", "bad port"),
        ("example.com:https", "bad port"),
        ("[::1", "unclosed"),
        ("[::1]x", "unexpected text"),
        ("[192.0.2.1]:80", "only for IPv6"),
        ("10.0.0.0/33", "CIDR"),
        ("example.com/8", "CIDR"),
        ("*.10.0.0.1", "does not apply to IP addresses"),
        ("exa!mple.com", "not a valid host name"),
        ("a:b:c.example", "not an IPv6 address"),
    ],
)
def test_invalid_entries_are_ignored_and_reported(entry: str, reason: str) -> None:
    rules = NoProxyRules.parse(f"good.example, {entry}")
    assert rules.entries == ("good.example",)
    assert len(rules.ignored) == 1
    ignored_entry, ignored_reason = rules.ignored[0]
    assert ignored_entry == entry
    assert reason in ignored_reason
    # The bad entry matches nothing; the good one still works.
    assert rules.match("good.example", 1) == "good.example"
    assert rules.match("example.com", 1) is None


def test_bool_and_repr() -> None:
    assert not NoProxyRules.parse("  ,")
    assert not NoProxyRules.parse("*x")
    rules = NoProxyRules.parse("a.example 10.0.0.0/8")
    assert rules
    assert repr(rules) == "NoProxyRules('a.example,10.0.0.0/8')"


def test_parse_once_match_many() -> None:
    rules = NoProxyRules.parse(".corp.example, 10.0.0.0/8, [fd00::1]:443")
    hosts = [("a.corp.example", 1), ("corp.example", 2), ("10.0.0.1", 3), ("fd00::1", 443)]
    assert all(rules.match(h, p) for h, p in hosts)
    assert not any(rules.match(h, p) for h, p in [("corp.example.org", 1), ("fd00::1", 80)])


# --- properties ----------------------------------------------------------------

LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True).filter(
    lambda label: not label.startswith("xn--") and label[2:4] != "--"
)
NAME = (
    st.lists(LABEL, min_size=1, max_size=4)
    .map(".".join)
    .filter(
        # An all-numeric dotted name could be an IPv4 literal.
        lambda name: not all(label.isdigit() for label in name.split("."))
    )
)
PORT = st.integers(min_value=1, max_value=65535)


@given(entry=NAME, sub=st.lists(LABEL, max_size=3), form=st.sampled_from(["", ".", "*."]))
def test_name_entry_matches_itself_and_every_subdomain(
    entry: str, sub: list[str], form: str
) -> None:
    host = ".".join([*sub, entry])
    assert NoProxyRules.parse(form + entry).match(host, 443) == form + entry


@given(entry=NAME, prefix=LABEL, port=PORT)
def test_name_entry_needs_a_label_boundary(entry: str, prefix: str, port: int) -> None:
    # "badexample.com" ends with "example.com" but is not a subdomain.
    host = prefix + entry
    for form in ("", ".", "*."):
        assert NoProxyRules.parse(form + entry).match(host, port) is None


@given(entry=NAME, host=NAME, port=PORT)
def test_case_and_trailing_dots_do_not_matter(entry: str, host: str, port: int) -> None:
    plain = NoProxyRules.parse(entry).match(host, port) is not None
    varied = NoProxyRules.parse(entry.upper() + ".").match(host.upper() + ".", port) is not None
    assert plain == varied


ENTRY = st.one_of(
    NAME,
    NAME.map(lambda n: "." + n),
    NAME.map(lambda n: "*." + n),
    st.tuples(NAME, PORT).map(lambda t: f"{t[0]}:{t[1]}"),
    st.ip_addresses().map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
    st.tuples(st.ip_addresses(v=4), st.integers(8, 32)).map(
        lambda t: str(ipaddress.ip_network(f"{t[0]}/{t[1]}", strict=False))
    ),
    st.sampled_from(["*x.com", "a..b", "x:0"]),  # invalid ones
)
SEPARATOR = st.sampled_from([",", " ", ", ", " ,", "\t", ",,", "\n", " , "])


@given(
    entries=st.lists(ENTRY, min_size=1, max_size=6),
    data=st.data(),
    host=st.one_of(NAME, st.ip_addresses().map(str)),
    port=PORT,
)
def test_entry_order_and_separators_do_not_change_the_result(
    entries: list[str], data: st.DataObject, host: str, port: int
) -> None:
    baseline = NoProxyRules.parse(",".join(entries))
    shuffled = data.draw(st.permutations(entries))
    separators = data.draw(st.lists(SEPARATOR, min_size=len(entries), max_size=len(entries)))
    value = "".join(sep + entry for sep, entry in zip(separators, shuffled, strict=True))
    other = NoProxyRules.parse(value)

    assert (baseline.match(host, port) is None) == (other.match(host, port) is None)
    assert sorted(baseline.entries) == sorted(other.entries)
    # Whatever entry is reported matches on its own.
    matched = other.match(host, port)
    if matched is not None:
        assert NoProxyRules.parse(matched).match(host, port) == matched


@given(network=st.ip_addresses(), prefix=st.integers(0, 128), host=st.ip_addresses())
def test_cidr_agrees_with_ipaddress(
    network: ipaddress.IPv4Address | ipaddress.IPv6Address,
    prefix: int,
    host: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    prefix = min(prefix, network.max_prefixlen)
    net = ipaddress.ip_network(f"{network}/{prefix}", strict=False)
    expected = host.version == net.version and host in net
    assert (NoProxyRules.parse(str(net)).match(str(host), 80) is not None) == expected
