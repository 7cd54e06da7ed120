"""The pure side of ``check``: observation -> cause and remedy, certificate
names, upgrade helpers, and the report's exit codes and JSON."""

from __future__ import annotations

import json
import ssl

import pytest
import trustme

from tunnelws._check import _diagnose as rules
from tunnelws._check._certs import CertificateError, read_cert_names
from tunnelws._check._report import CheckReport, Diagnosis, StepResult, render_text
from tunnelws._check._upgrade import (
    accept_is_valid,
    compare_headers,
    expected_accept,
    parse_response_head,
)

A = rules.ConnectAttempt

CONNECT_TABLE: list[tuple[str, rules.ConnectObservation, str | None, str | None]] = [
    ("tunnel open", rules.ConnectObservation("h:443", 443, (A(200, "OK"),)), None, None),
    (
        "credentials accepted",
        rules.ConnectObservation(
            "h:443", 443, (A(407, "Auth", ("Basic",)), A(200, "OK", (), "Basic")), True
        ),
        None,
        None,
    ),
    (
        "no credentials",
        rules.ConnectObservation("h:443", 443, (A(407, "Auth", ("Basic",)),)),
        "proxy-auth",
        "auth-missing",
    ),
    (
        "wrong credentials",
        rules.ConnectObservation("h:443", 443, (A(407, "Auth", ("Digest",), "Basic"),), True),
        "proxy-auth",
        "auth-rejected",
    ),
    (
        "unsupported scheme",
        rules.ConnectObservation("h:443", 443, (A(407, "Auth", ("Kerberos-Only",)),), True),
        "proxy-auth",
        "auth-unsupported",
    ),
    (
        "403 on 8080, 443 reachable",
        rules.ConnectObservation("h:8080", 8080, (A(403, "Forbidden"),), port_443_status=200),
        "proxy-refused",
        "port-policy",
    ),
    (
        "403 on 8080, 443 refused too",
        rules.ConnectObservation("h:8080", 8080, (A(403, "Forbidden"),), port_443_status=403),
        "proxy-refused",
        "host-denied",
    ),
    (
        "403 on 8080, 443 not probed",
        rules.ConnectObservation("h:8080", 8080, (A(403, "Forbidden"),)),
        "proxy-refused",
        "refused-port-or-host",
    ),
    (
        "403 on 443",
        rules.ConnectObservation("h:443", 443, (A(403, "Forbidden"),)),
        "proxy-refused",
        "host-denied",
    ),
    (
        "502",
        rules.ConnectObservation("h:443", 443, (A(502, "Bad Gateway"),)),
        "proxy-refused",
        "origin-unreachable-from-proxy",
    ),
    (
        "504",
        rules.ConnectObservation("h:443", 443, (A(504, "Gateway Timeout"),)),
        "proxy-refused",
        "origin-timeout-from-proxy",
    ),
    (
        "405",
        rules.ConnectObservation("h:443", 443, (A(405, "Not Allowed"),)),
        "proxy-refused",
        "connect-not-supported",
    ),
    ("silent", rules.ConnectObservation("h:443", 443, timed_out=True), "timeout", "proxy-silent"),
    (
        "closed",
        rules.ConnectObservation("h:443", 443, protocol_error="closed"),
        "proxy-protocol",
        "proxy-closed",
    ),
    (
        "garbage",
        rules.ConnectObservation(
            "h:443", 443, protocol_error="not HTTP", reply_prefix=b"\x00\xffjunk", received_bytes=6
        ),
        "proxy-protocol",
        "not-http",
    ),
    (
        "huge",
        rules.ConnectObservation(
            "h:443",
            443,
            protocol_error="too big",
            reply_prefix=b"HTTP/1.1 200",
            received_bytes=70000,
        ),
        "proxy-protocol",
        "huge-headers",
    ),
    (
        "bad status line",
        rules.ConnectObservation(
            "h:443", 443, protocol_error="bad", reply_prefix=b"HTTP/9 x", received_bytes=20
        ),
        "proxy-protocol",
        "malformed-reply",
    ),
]


@pytest.mark.parametrize(
    ("observation", "category", "cause"),
    [row[1:] for row in CONNECT_TABLE],
    ids=[row[0] for row in CONNECT_TABLE],
)
def test_connect_rules(
    observation: rules.ConnectObservation, category: str | None, cause: str | None
) -> None:
    diagnosis = rules.diagnose_connect(observation)
    if cause is None:
        assert diagnosis is None
        return
    assert diagnosis is not None
    assert (diagnosis.category, diagnosis.cause) == (category, cause)
    assert diagnosis.message and diagnosis.remedy


def test_port_policy_message_is_the_issues_wording() -> None:
    observation = rules.ConnectObservation("h:80", 80, (A(403, "Forbidden"),), port_443_status=502)
    diagnosis = rules.diagnose_connect(observation)
    assert diagnosis is not None
    assert "allows CONNECT only to 443" in diagnosis.message
    assert diagnosis.remedy.startswith("use wss:// on port 443")


def test_garbage_that_is_tls_suggests_an_https_proxy_url() -> None:
    observation = rules.ConnectObservation(
        "h:443", 443, protocol_error="x", reply_prefix=b"\x16\x03\x01\x00", received_bytes=4
    )
    diagnosis = rules.diagnose_connect(observation)
    assert diagnosis is not None and "https:// proxy URL" in diagnosis.remedy


TLS_TABLE: list[tuple[str, rules.TLSObservation, str | None, str | None]] = [
    (
        "verified, same issuer",
        rules.TLSObservation("h", True, issuer="CA", direct_issuer="CA"),
        None,
        None,
    ),
    ("verified direct", rules.TLSObservation("h", False, issuer="CA"), None, None),
    (
        "untrusted, issuer differs directly",
        rules.TLSObservation(
            "h",
            True,
            verify_error="unable to get local issuer certificate",
            issuer="Corp",
            direct_issuer="Real CA",
        ),
        "tls",
        "tls-intercepted",
    ),
    (
        "untrusted through proxy, direct unknown",
        rules.TLSObservation(
            "h", True, verify_error="self-signed certificate in certificate chain", issuer="Corp"
        ),
        "tls",
        "tls-intercepted",
    ),
    (
        "issuer is the https proxy's own",
        rules.TLSObservation(
            "h",
            True,
            verify_error="unable to get local issuer certificate",
            issuer="Corp",
            proxy_issuer="Corp",
        ),
        "tls",
        "tls-intercepted",
    ),
    (
        "untrusted, same issuer directly",
        rules.TLSObservation(
            "h",
            True,
            verify_error="unable to get local issuer certificate",
            issuer="Private CA",
            direct_issuer="Private CA",
        ),
        "tls",
        "tls-untrusted",
    ),
    (
        "untrusted without proxy",
        rules.TLSObservation(
            "h", False, verify_error="unable to get local issuer certificate", issuer="Private CA"
        ),
        "tls",
        "tls-untrusted",
    ),
    (
        "name mismatch",
        rules.TLSObservation(
            "h",
            False,
            verify_error="Hostname mismatch, certificate is not valid for 'h'.",
            issuer="CA",
        ),
        "tls",
        "tls-name-mismatch",
    ),
    (
        "intercepted but trusted",
        rules.TLSObservation("h", True, issuer="Corp", direct_issuer="Real CA"),
        "tls",
        "tls-intercepted-trusted",
    ),
    (
        "not TLS",
        rules.TLSObservation("h", False, handshake_error="WRONG_VERSION_NUMBER"),
        "tls",
        "tls-failed",
    ),
    ("silent", rules.TLSObservation("h", True, timed_out=True, timeout=3), "timeout", "tls-silent"),
]


@pytest.mark.parametrize(
    ("observation", "category", "cause"),
    [row[1:] for row in TLS_TABLE],
    ids=[row[0] for row in TLS_TABLE],
)
def test_tls_rules(
    observation: rules.TLSObservation, category: str | None, cause: str | None
) -> None:
    diagnosis = rules.diagnose_tls(observation)
    if cause is None:
        assert diagnosis is None
        return
    assert diagnosis is not None
    assert (diagnosis.category, diagnosis.cause) == (category, cause)


def test_interception_remedy_is_the_issues_wording() -> None:
    diagnosis = rules.diagnose_tls(
        rules.TLSObservation(
            "h",
            True,
            verify_error="unable to get local issuer certificate",
            issuer="Corp",
            direct_issuer="Real",
        )
    )
    assert diagnosis is not None
    assert diagnosis.remedy.startswith(
        "your proxy intercepts TLS; pass its CA with --cacert or install it in the system store"
    )


U = rules.UpgradeObservation
STRIPPED = rules.HeaderChanges(stripped=("Upgrade", "Connection"), added=("Via",))
UPGRADE_TABLE: list[tuple[str, rules.UpgradeObservation, str | None, str | None]] = [
    ("101 correct", U("ws://h/", False, True, status=101, accept_ok=True), None, None),
    (
        "101 wrong accept",
        U("ws://h/", False, True, status=101, accept_ok=False),
        "handshake",
        "bad-accept",
    ),
    (
        "101 but a header stripped",
        U(
            "ws://h/",
            False,
            True,
            status=101,
            accept_ok=True,
            changes=rules.HeaderChanges(stripped=("Sec-WebSocket-Protocol",)),
        ),
        "handshake",
        "headers-stripped",
    ),
    ("426 on ws://", U("ws://h/", False, False, status=426), "handshake", "upgrade-stripped"),
    ("200 on ws://", U("ws://h/", False, False, status=200), "handshake", "upgrade-stripped"),
    (
        "400 with /info evidence",
        U("wss://h/", True, False, status=400, changes=STRIPPED),
        "handshake",
        "upgrade-stripped",
    ),
    ("404", U("wss://h/x", True, False, status=404), "handshake", "no-such-path"),
    ("403", U("wss://h/x", True, False, status=403), "handshake", "upgrade-forbidden"),
    ("500", U("wss://h/x", True, False, status=500), "handshake", "upgrade-refused"),
    ("closed", U("ws://h/", False, False, error="closed"), "handshake", "upgrade-closed"),
    ("silent", U("ws://h/", False, False, timed_out=True, timeout=2), "timeout", "upgrade-silent"),
]


@pytest.mark.parametrize(
    ("observation", "category", "cause"),
    [row[1:] for row in UPGRADE_TABLE],
    ids=[row[0] for row in UPGRADE_TABLE],
)
def test_upgrade_rules(
    observation: rules.UpgradeObservation, category: str | None, cause: str | None
) -> None:
    diagnosis = rules.diagnose_upgrade(observation)
    if cause is None:
        assert diagnosis is None
        return
    assert diagnosis is not None
    assert (diagnosis.category, diagnosis.cause) == (category, cause)


def test_upgrade_stripped_names_the_via_proxy() -> None:
    observation = U(
        "ws://h/", False, False, status=200, headers=(("Via", "1.1 squid"),), changes=STRIPPED
    )
    diagnosis = rules.diagnose_upgrade(observation)
    assert diagnosis is not None and "1.1 squid" in diagnosis.message
    assert "wss://" in diagnosis.remedy


@pytest.mark.parametrize(
    ("observation", "cause"),
    [
        (rules.TCPObservation("refused", "h:1", False, "Connection refused"), "tcp-refused"),
        (rules.TCPObservation("refused", "p:3128", True, "Connection refused"), "tcp-refused"),
        (rules.TCPObservation("silent", "h:1", False, timeout=3), "tcp-silent"),
        (rules.TCPObservation("unreachable", "h:1", False, "No route"), "no-route"),
        (rules.TCPObservation("error", "h:1", False, "odd"), "tcp-error"),
    ],
)
def test_tcp_rules(observation: rules.TCPObservation, cause: str) -> None:
    diagnosis = rules.diagnose_tcp(observation)
    assert diagnosis.cause == cause
    expected = {"silent": "timeout"}.get(
        observation.outcome, "proxy-connect" if observation.via_proxy else "connect"
    )
    assert diagnosis.category == expected


def test_echo_rules() -> None:
    reset = rules.diagnose_echo(
        rules.EchoObservation("1 MiB", lost=True, how="reset", bytes_before=9)
    )
    assert (reset.cause, reset.category) == ("tunnel-reset", "connection-lost")
    assert "9 bytes" in reset.message
    too_big = rules.diagnose_echo(
        rules.EchoObservation("1 MiB", lost=True, how="close-frame", close_code=1009)
    )
    assert too_big.cause == "message-too-big"
    assert rules.diagnose_echo(rules.EchoObservation("text")).cause == "echo-altered"
    assert rules.diagnose_echo(rules.EchoObservation("text", timed_out=True)).category == "timeout"


def test_idle_rules() -> None:
    assert rules.diagnose_idle(rules.IdleObservation(10)) is None
    fixed = rules.diagnose_idle(rules.IdleObservation(10, 3.2, 1.5, True))
    assert fixed is not None and fixed.cause == "idle-timeout"
    assert "after ~3 s" in fixed.message and "set ping_interval below 3" in fixed.remedy
    lifetime = rules.diagnose_idle(rules.IdleObservation(10, 3.2, 1.5, False))
    assert lifetime is not None and lifetime.cause == "tunnel-lifetime"


def test_sse_rules() -> None:
    assert rules.diagnose_sse(rules.SSEObservation(0.25, (0.0, 0.25, 0.5, 0.75))) is None
    buffered = rules.diagnose_sse(rules.SSEObservation(0.25, (0.76, 0.76, 0.77, 0.77)))
    assert buffered is not None and buffered.cause == "sse-buffered"
    assert buffered.severity == "warning"


def test_route_and_resolution_rules() -> None:
    route = rules.diagnose_route("bad scheme", "https_proxy")
    assert route.category == "config" and "https_proxy" in route.message
    assert (
        rules.diagnose_resolution("x.example", "Name or service not known", via_proxy=False).cause
        == "no-dns"
    )
    assert (
        rules.diagnose_resolution("proxy.corp", "nope", via_proxy=True).category == "proxy-connect"
    )


# -- certificates ----------------------------------------------------------------


def _der(pem: bytes) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.decode())


def test_cert_names_of_a_leaf_and_its_ca() -> None:
    ca = trustme.CA(organization_name="Example Corp Ünïcode")
    leaf = ca.issue_cert("origin.example", common_name="origin.example")
    leaf_names = read_cert_names(_der(leaf.cert_chain_pems[0].bytes()))
    ca_names = read_cert_names(_der(ca.cert_pem.bytes()))
    assert "CN=origin.example" in leaf_names.subject
    assert "O=Example Corp Ünïcode" in leaf_names.issuer
    assert leaf_names.issuer == ca_names.subject
    assert leaf_names.issuer_der == ca_names.issuer_der  # trustme CAs are self-issued
    assert ca_names.self_issued and not leaf_names.self_issued


@pytest.mark.parametrize("data", [b"", b"\x30", b"\x02\x01\x00", b"\x30\x84\xff\xff\xff\xff"])
def test_cert_reader_rejects_garbage(data: bytes) -> None:
    with pytest.raises(CertificateError):
        read_cert_names(data)


# -- upgrade helpers ---------------------------------------------------------------


def test_accept_key_rfc6455_example() -> None:
    assert expected_accept("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_accept_validation() -> None:
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    good = parse_response_head(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    )
    assert accept_is_valid(good, key)
    bad = parse_response_head(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: AAAA"
    )
    assert not accept_is_valid(bad, key)


def test_compare_headers() -> None:
    sent = [("Host", "h"), ("Upgrade", "websocket"), ("Connection", "Upgrade"), ("X-A", "1")]
    received = [["Host", "h:80"], ["X-A", "1"], ["Via", "1.1 proxy"]]
    changes = compare_headers(sent, received)
    assert changes.stripped == ("Upgrade", "Connection")
    assert changes.added == ("Via",)


# -- report ----------------------------------------------------------------------------


def test_report_exit_code_json_and_text() -> None:
    diagnosis = Diagnosis("proxy-auth", "auth-missing", "needs auth", "pass --proxy-user")
    report = CheckReport(
        "wss://h/echo",
        [
            StepResult("route", "ok", "via http://u:***@p:3128", 0.0001),
            StepResult("connect", "fail", "407", 0.002, ["offers Basic"], diagnosis),
        ],
    )
    assert report.exit_code == 6 and not report.ok
    data = json.loads(json.dumps(report.to_dict()))
    assert data["failed_step"] == "connect" and data["exit_code"] == 6
    assert data["steps"][1]["diagnosis"]["cause"] == "auth-missing"
    text = render_text(report)
    assert "✘ 2 CONNECT" in text and "Remedy: pass --proxy-user" in text
    assert "exit 6" in text


def test_unknown_category_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown error category"):
        Diagnosis("nonsense", "x", "y", "z")
