"""The Sans-IO CONNECT core: request bytes and reply parsing, byte by byte."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunnelws._connect import ConnectReplyParser, ProxyReply, build_connect_request
from tunnelws._errors import MAX_KEPT_BODY, ProxyProtocolError

# -- build_connect_request -------------------------------------------------------


def test_request_for_a_name() -> None:
    assert build_connect_request("example.com", 443) == (
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
    )


def test_request_brackets_ipv6_and_writes_headers_in_order() -> None:
    request = build_connect_request(
        "::1",
        8080,
        headers=[
            ("User-Agent", "tunnelws/0.1"),
            ("X-Trace", "a b"),
            ("Proxy-Authorization", "Basic eA=="),
        ],
    )
    assert request == (
        b"CONNECT [::1]:8080 HTTP/1.1\r\nHost: [::1]:8080\r\nUser-Agent: tunnelws/0.1\r\n"
        b"X-Trace: a b\r\nProxy-Authorization: Basic eA==\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("host", "port"),
    [
        ("", 443),
        ("exa mple.com", 443),
        ("a/b", 80),
        ("x.com:80", 443),
        ("x.com", 0),
        ("x.com", 65536),
        ("x.com\r\nEvil: 1", 443),
    ],
)
def test_request_rejects_bad_targets(host: str, port: int) -> None:
    with pytest.raises(ValueError, match="invalid CONNECT"):
        build_connect_request(host, port)


@pytest.mark.parametrize(
    "value", ["Basic c2VjcmV0\r\nX-Evil: 1", "Basic c2VjcmV0\n", "Basic c2V\x00jcmV0"]
)
def test_request_rejects_injected_values_without_echoing_them(value: str) -> None:
    with pytest.raises(ValueError, match="CR, LF or NUL") as info:
        build_connect_request("example.com", 443, headers=[("Proxy-Authorization", value)])
    assert "c2V" not in str(info.value)


@pytest.mark.parametrize("name", ["Proxy-Authorization: Basic c2VjcmV0", "Bad Name", "", "X\r\nY"])
def test_request_rejects_bad_header_names_without_echoing_secrets(name: str) -> None:
    with pytest.raises(ValueError, match="RFC 9110 token") as info:
        build_connect_request("example.com", 443, headers=[(name, "v")])
    assert "c2VjcmV0" not in str(info.value)


def test_request_refuses_a_second_host_header() -> None:
    with pytest.raises(ValueError, match="Host"):
        build_connect_request("example.com", 443, headers=[("host", "other")])


def test_request_refuses_non_latin1_values() -> None:
    with pytest.raises(ValueError, match="ISO-8859-1"):
        build_connect_request("example.com", 443, headers=[("X-Name", "日本")])


# -- reply parsing: helpers -----------------------------------------------------


def parse_whole(data: bytes, *, eof: bool = False) -> tuple[ProxyReply, bytes]:
    parser = ConnectReplyParser()
    reply = parser.feed(data)
    if reply is None:
        assert eof, "reply incomplete without EOF"
        reply = parser.feed_eof()
    assert reply is not None
    return reply, parser.leftover


def parse_dribbled(data: bytes, *, eof: bool = False) -> tuple[ProxyReply, bytes]:
    parser = ConnectReplyParser()
    reply = None
    for index in range(len(data)):
        got = parser.feed(data[index : index + 1])
        if got is not None:
            assert reply is None, "reply returned twice"
            reply = got
    if reply is None:
        assert eof
        reply = parser.feed_eof()
    assert reply is not None
    return reply, parser.leftover


def protocol_error(data: bytes, *, eof: bool = False) -> str:
    parser = ConnectReplyParser()
    with pytest.raises(ProxyProtocolError) as info:
        assert parser.feed(data) is None
        if eof:
            parser.feed_eof()
    return str(info.value)


# -- reply parsing: successful tunnels ----------------------------------------

TWO_XX_CASES = [
    # (wire bytes, version, status, reason, headers, tunnel bytes)
    (b"HTTP/1.1 200 Connection established\r\n\r\n", "1.1", 200, "Connection established", (), b""),
    (b"HTTP/1.0 200 Connection established\r\n\r\n", "1.0", 200, "Connection established", (), b""),
    (
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
        "1.1",
        200,
        "OK",
        (("Connection", "close"),),
        b"",
    ),
    (
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n\x16\x03\x01",
        "1.1",
        200,
        "OK",
        (("Content-Length", "0"),),
        b"\x16\x03\x01",
    ),
    # Content-Length and chunked on a 2xx are ignored: what follows is tunnel data.
    (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello world",
        "1.1",
        200,
        "OK",
        (("Content-Length", "5"),),
        b"hello world",
    ),
    (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "1.1",
        200,
        "OK",
        (("Transfer-Encoding", "chunked"),),
        b"0\r\n\r\n",
    ),
    (b"HTTP/1.1 201 Created\r\n\r\n", "1.1", 201, "Created", (), b""),
    (
        b"HTTP/1.1 204 No Content\r\n\r\nSSH-2.0-server\r\n",
        "1.1",
        204,
        "No Content",
        (),
        b"SSH-2.0-server\r\n",
    ),
    (b"HTTP/1.1 200\r\n\r\n", "1.1", 200, "", (), b""),
    (b"HTTP/1.1 200 \r\n\r\n", "1.1", 200, "", (), b""),
    # LF-only line endings.
    (
        b"HTTP/1.0 200 OK\nProxy-Agent: tiny\n\nDATA",
        "1.0",
        200,
        "OK",
        (("Proxy-Agent", "tiny"),),
        b"DATA",
    ),
    # 1xx interim replies are skipped.
    (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nVia: 1.1 p\r\n\r\n",
        "1.1",
        200,
        "OK",
        (("Via", "1.1 p"),),
        b"",
    ),
    # Values are stripped, names kept as sent, obs-fold unfolded into one space.
    (
        b"HTTP/1.1 200 OK\r\nX-Thing:   a  \t\r\nx-folded: one\r\n  two\r\n\r\n",
        "1.1",
        200,
        "OK",
        (("X-Thing", "a"), ("x-folded", "one two")),
        b"",
    ),
    (b"HTTP/1.1 200 OK\r\nX-Empty:\r\n\r\n", "1.1", 200, "OK", (("X-Empty", ""),), b""),
    # obs-text in values and reason is decoded as ISO-8859-1.
    (
        b"HTTP/1.1 200 Verbindung hergestellt \xe4\r\nX: caf\xe9\r\n\r\n",
        "1.1",
        200,
        "Verbindung hergestellt ä",
        (("X", "café"),),
        b"",
    ),
]


@pytest.mark.parametrize("parse", [parse_whole, parse_dribbled])
@pytest.mark.parametrize(("wire", "version", "status", "reason", "headers", "tunnel"), TWO_XX_CASES)
def test_2xx_replies(
    parse: object,
    wire: bytes,
    version: str,
    status: int,
    reason: str,
    headers: tuple[tuple[str, str], ...],
    tunnel: bytes,
) -> None:
    assert callable(parse)
    reply, leftover = parse(wire)
    assert reply == ProxyReply(version, status, reason, headers, b"", reusable=False)
    assert reply.ok
    assert leftover == tunnel


def test_bytes_fed_after_a_2xx_go_to_leftover_untouched() -> None:
    parser = ConnectReplyParser()
    assert parser.feed(b"HTTP/1.1 200 OK\r\n\r\nab") is not None
    assert parser.feed(b"HTTP/1.1 500 not parsed\r\n\r\n") is None
    assert parser.leftover == b"abHTTP/1.1 500 not parsed\r\n\r\n"
    assert parser.reply is not None and parser.reply.status == 200


def test_get_all_is_case_insensitive_and_ordered() -> None:
    reply, _ = parse_whole(
        b"HTTP/1.1 407 Auth\r\nProxy-Authenticate: Basic realm=a\r\nVia: x\r\n"
        b"proxy-authenticate: Digest realm=b\r\nContent-Length: 0\r\n\r\n"
    )
    assert reply.get_all("PROXY-AUTHENTICATE") == ["Basic realm=a", "Digest realm=b"]
    assert reply.get_all("missing") == []
    assert not reply.ok


# -- reply parsing: refusals and their bodies --------------------------------

ERROR_CASES = [
    # (wire bytes, needs EOF, status, body, reusable, leftover)
    (
        b'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="p"\r\n'
        b"Content-Length: 12\r\n\r\naccess deniedNEXT",
        False,
        407,
        b"access denie",
        True,
        b"dNEXT",
    ),
    (b"HTTP/1.1 407 Auth\r\nContent-Length: 0\r\n\r\n", False, 407, b"", True, b""),
    (b"HTTP/1.1 407 Auth\r\nContent-Length: 3, 3\r\n\r\nabc", False, 407, b"abc", True, b""),
    (
        b"HTTP/1.1 407 Auth\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
        False,
        407,
        b"abc",
        False,
        b"",
    ),
    (
        b"HTTP/1.1 407 Auth\r\nContent-Length: 3\r\nProxy-Connection: close\r\n\r\nabc",
        False,
        407,
        b"abc",
        False,
        b"",
    ),
    (b"HTTP/1.0 407 Auth\r\nContent-Length: 3\r\n\r\nabc", False, 407, b"abc", False, b""),
    (
        b"HTTP/1.0 407 Auth\r\nContent-Length: 3\r\nConnection: Keep-Alive\r\n\r\nabc",
        False,
        407,
        b"abc",
        True,
        b"",
    ),
    # Chunked, with extensions, trailers and LF-only framing.
    (
        b"HTTP/1.1 407 Auth\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\nMORE",
        False,
        407,
        b"hello world",
        True,
        b"MORE",
    ),
    (
        b"HTTP/1.1 407 Auth\nTransfer-Encoding: gzip, chunked\n\na\n0123456789\n0\n\n",
        False,
        407,
        b"0123456789",
        True,
        b"",
    ),
    # Transfer-Encoding wins over Content-Length, but such a connection is not reused.
    (
        b"HTTP/1.1 407 Auth\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nab\r\n0\r\n\r\n",
        False,
        407,
        b"ab",
        False,
        b"",
    ),
    # No framing: the body runs until the proxy closes.
    (
        b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\n\r\n<html><body>upstream down"
        b"</body></html>",
        True,
        502,
        b"<html><body>upstream down</body></html>",
        False,
        b"",
    ),
    (
        b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: gzip\r\n\r\n\x1f\x8b",
        True,
        403,
        b"\x1f\x8b",
        False,
        b"",
    ),
    (b"HTTP/1.1 304 Not Modified\r\n\r\nX", False, 304, b"", True, b"X"),
]


@pytest.mark.parametrize("parse", [parse_whole, parse_dribbled])
@pytest.mark.parametrize(("wire", "eof", "status", "body", "reusable", "after"), ERROR_CASES)
def test_non_2xx_replies(
    parse: object, wire: bytes, eof: bool, status: int, body: bytes, reusable: bool, after: bytes
) -> None:
    assert callable(parse)
    reply, leftover = parse(wire, eof=eof)
    assert (reply.status, reply.body, reply.reusable, leftover) == (status, body, reusable, after)
    assert not reply.ok


def test_reply_needing_eof_is_not_complete_before_it() -> None:
    parser = ConnectReplyParser()
    assert parser.feed(b"HTTP/1.1 502 Bad Gateway\r\n\r\npartial") is None
    assert parser.reply is None
    reply = parser.feed_eof()
    assert reply is not None and reply.body == b"partial" and not reply.reusable


def test_huge_bodies_are_discarded_beyond_the_kept_prefix() -> None:
    body = bytes(range(256)) * 40960  # 10 MiB
    head = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: %d\r\n\r\n" % len(body)
    parser = ConnectReplyParser()
    assert parser.feed(head + body[:1000]) is None
    for start in range(1000, len(body), 1 << 20):
        parser.feed(body[start : start + (1 << 20)])
        assert len(parser._buf) == 0  # nothing of the body is buffered
    reply = parser.reply
    assert reply is not None and reply.body == body[:MAX_KEPT_BODY]


def test_unframed_body_is_bounded_too() -> None:
    parser = ConnectReplyParser()
    parser.feed(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
    for _ in range(100):
        assert parser.feed(b"x" * 100_000) is None
    assert len(parser._buf) == 0
    reply = parser.feed_eof()
    assert reply is not None and reply.body == b"x" * MAX_KEPT_BODY


# -- reply parsing: protocol errors ------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "eof", "message"),
    [
        (b"", True, "proxy closed the connection without answering the CONNECT"),
        (
            b"HTTP/1.1 200 Connection est",
            True,
            "proxy closed the connection in the middle of its reply (27 bytes received)",
        ),
        (
            b"HTTP/1.1 407 Auth\r\nContent-Length: 10\r\n\r\nabc",
            True,
            "proxy closed the connection in the middle of its reply (44 bytes received)",
        ),
        (
            b"HTTP/1.1 407 Auth\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
            True,
            "in the middle of its reply",
        ),
        (b"SSH-2.0-OpenSSH_9.2\r\n", False, "proxy reply is not HTTP: b'SSH-2.0-Op'..."),
        (b"\x16\x03\x01\x02\x00", False, "proxy reply is not HTTP: b'\\x16\\x03\\x01\\x02\\x00'"),
        (b"\r\nHTTP/1.1 200 OK\r\n\r\n", False, "proxy reply is not HTTP"),
        (b"http/1.1 200 OK\r\n\r\n", False, "proxy reply is not HTTP"),
        (b"HTTP/2 200\r\n\r\n", False, "invalid status line in proxy reply: b'HTTP/2 200'"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", False, "invalid status line"),
        (b"HTTP/1.1 099 Low\r\n\r\n", False, "invalid status line"),
        (b"HTTP/1.1  200 OK\r\n\r\n", False, "invalid status line"),
        (b"HTTP/1.1 200 O\x00K\r\n\r\n", False, "invalid status line"),
        (
            b"HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n",
            False,
            "invalid header line in proxy reply: b'No colon here'",
        ),
        (b"HTTP/1.1 200 OK\r\nName : v\r\n\r\n", False, "invalid header line"),
        (b"HTTP/1.1 200 OK\r\n: v\r\n\r\n", False, "invalid header line"),
        (b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n", False, "invalid header line"),
        (b"HTTP/1.1 200 OK\r\n folded-first\r\n\r\n", False, "invalid header line"),
        (
            b"HTTP/1.1 407 A\r\nContent-Length: -1\r\n\r\n",
            False,
            "bad Content-Length in proxy reply: '-1'",
        ),
        (b"HTTP/1.1 407 A\r\nContent-Length: 1, 2\r\n\r\n", False, "bad Content-Length"),
        (b"HTTP/1.1 407 A\r\nContent-Length: \r\n\r\n", False, "bad Content-Length"),
        (
            b"HTTP/1.1 407 A\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            False,
            "bad Content-Length",
        ),
        (b"HTTP/1.1 407 A\r\nContent-Length: \xd9\xa3\r\n\r\n", False, "bad Content-Length"),
        (
            b"HTTP/1.1 407 A\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            False,
            "bad chunk size in proxy reply: b'zz'",
        ),
        (b"HTTP/1.1 407 A\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", False, "bad chunk size"),
        (
            b"HTTP/1.1 407 A\r\nTransfer-Encoding: chunked\r\n\r\n11111111111111111\r\n",
            False,
            "bad chunk size",
        ),
        (
            b"HTTP/1.1 407 A\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n",
            False,
            "chunk data not followed by CRLF",
        ),
        (
            b"HTTP/1.1 407 A\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 5000,
            False,
            "over-long chunk size line",
        ),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            False,
            "proxy answered the CONNECT with 101 Switching Protocols",
        ),
    ],
)
def test_protocol_errors(wire: bytes, eof: bool, message: str) -> None:
    assert message in protocol_error(wire, eof=eof)


def test_garbage_is_detected_before_any_newline() -> None:
    parser = ConnectReplyParser()
    assert parser.feed(b"HTT") is None
    with pytest.raises(ProxyProtocolError, match="not HTTP"):
        parser.feed(b"X")


def test_a_failed_parser_stays_failed() -> None:
    parser = ConnectReplyParser()
    with pytest.raises(ProxyProtocolError, match="not HTTP") as first:
        parser.feed(b"garbage")
    with pytest.raises(ProxyProtocolError) as again:
        parser.feed(b"HTTP/1.1 200 OK\r\n\r\n")
    assert again.value is first.value
    with pytest.raises(ProxyProtocolError):
        parser.feed_eof()


def test_feed_eof_after_a_complete_reply_returns_it() -> None:
    parser = ConnectReplyParser()
    reply = parser.feed(b"HTTP/1.1 200 OK\r\n\r\n")
    assert reply is not None and parser.feed_eof() is reply


# -- header size limit ------------------------------------------------------------

LIMIT = 65536


def block_of_size(size: int, *, short_lines: int = 0) -> bytes:
    """A 200 reply whose header block (blank line included) is exactly ``size``
    bytes: ``short_lines`` small header lines, then one filler line."""
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-N: %06d\r\n" % n for n in range(short_lines))
    filler_line_overhead = len(b"X-Filler: \r\n") + 2  # + the final blank line
    filler = b"a" * (size - len(head) - filler_line_overhead)
    block = head + b"X-Filler: " + filler + b"\r\n\r\n"
    assert len(block) == size
    return block


def test_header_block_of_exactly_the_limit_is_accepted() -> None:
    reply, leftover = parse_whole(block_of_size(LIMIT) + b"tunnel")
    assert reply.status == 200 and leftover == b"tunnel"


@pytest.mark.parametrize("feeder", ["whole", "dribble", "huge-chunk"])
def test_header_block_over_the_limit_fails(feeder: str) -> None:
    data = block_of_size(LIMIT + 1)
    parser = ConnectReplyParser()
    with pytest.raises(ProxyProtocolError, match=f"proxy reply header block exceeds {LIMIT} bytes"):
        if feeder == "whole":
            parser.feed(data)
        elif feeder == "huge-chunk":
            parser.feed(b"HTTP/1.1 200 OK\r\nX: " + b"a" * (10 << 20))
        else:
            for index in range(len(data)):
                parser.feed(data[index : index + 1])
    assert len(parser._buf) == 0  # and nothing retained after the failure


def test_many_small_header_lines_over_the_limit_fail_in_one_chunk() -> None:
    data = b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * (3 << 20) + b"\r\n"
    with pytest.raises(ProxyProtocolError, match="exceeds 65536 bytes"):
        ConnectReplyParser().feed(data)


def test_interim_replies_count_against_the_limit() -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    parser = ConnectReplyParser()
    with pytest.raises(ProxyProtocolError, match="exceeds 65536 bytes"):
        for _ in range(LIMIT // len(interim) + 1):
            assert parser.feed(interim) is None


def test_custom_header_limit() -> None:
    with pytest.raises(ProxyProtocolError, match="exceeds 100 bytes"):
        ConnectReplyParser(max_header_bytes=100).feed(block_of_size(101))
    assert ConnectReplyParser(max_header_bytes=100).feed(block_of_size(100)) is not None


def test_trailers_are_bounded() -> None:
    head = b"HTTP/1.1 407 A\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
    with pytest.raises(ProxyProtocolError, match="trailer section exceeds"):
        ConnectReplyParser().feed(head + b"X: " + b"t" * LIMIT + b"\r\n\r\n")


def test_dribbling_a_64k_reply_one_byte_at_a_time_stays_linear() -> None:
    # Runs in well under a second when feeding is O(1) per byte; a parser that
    # re-scans or re-parses its buffer on every byte takes minutes (pytest-timeout
    # guards). Both shapes: one long line, and thousands of short ones.
    for short_lines in (0, 5000):
        data = block_of_size(LIMIT, short_lines=short_lines) + b"tunnel"
        reply, leftover = parse_dribbled(data)
        assert reply.status == 200 and leftover == b"tunnel"
        assert len(reply.headers) == short_lines + 1


def test_dribbling_a_non_2xx_body_stays_linear() -> None:
    body = b"b" * 200_000
    reply, _ = parse_dribbled(b"HTTP/1.1 502 Bad\r\nContent-Length: 200000\r\n\r\n" + body)
    assert reply.body == body[:MAX_KEPT_BODY]


# -- any split gives the same result --------------------------------------------

_token = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_",
    min_size=1,
    max_size=12,
)
_value = st.text(alphabet='abcdefghijklmnopqrstuvwxyz0123456789 ,;=/"()', max_size=30).map(
    str.strip
)


@st.composite
def valid_replies(draw: st.DrawFn) -> tuple[bytes, ProxyReply, bytes]:
    """A valid reply on the wire, what it must parse to, and what must be left over."""
    newline = draw(st.sampled_from([b"\r\n", b"\n"]))
    version = draw(st.sampled_from(["1.0", "1.1"]))
    status = draw(st.sampled_from([200, 201, 204, 403, 407, 502, 503]))
    reason = draw(
        st.sampled_from(["", "OK", "Connection established", "Proxy Authentication Required"])
    )
    headers = draw(st.lists(st.tuples(_token, _value), max_size=6))
    headers = [(name, value) for name, value in headers if name.lower() not in _FRAMING_NAMES]
    interim = draw(
        st.lists(
            st.sampled_from([b"HTTP/1.1 100 Continue", b"HTTP/1.1 102 Processing"]), max_size=2
        )
    )
    wire = b"".join(line + newline + newline for line in interim)
    ok = 200 <= status < 300
    framing = draw(st.sampled_from(["length", "chunked", "none"]))
    body = draw(st.binary(max_size=3000))
    extra = draw(st.binary(max_size=200))
    reusable = False
    if framing == "length":
        headers.append(("Content-Length", str(len(body))))
    elif framing == "chunked":
        headers.append(("Transfer-Encoding", "chunked"))
    status_line = f"HTTP/{version} {status}" + (f" {reason}" if reason else "")
    wire += status_line.encode() + newline
    wire += b"".join(f"{name}: {value}".encode() + newline for name, value in headers)
    wire += newline
    if ok:
        # Whatever follows a 2xx is tunnel data, even if it looks like a body.
        tail = body + extra
        expected_body, leftover, needs_eof = b"", tail, False
    elif framing == "length":
        tail, expected_body, leftover, needs_eof = body + extra, body[:MAX_KEPT_BODY], extra, False
        reusable = version == "1.1"
    elif framing == "chunked":
        sizes = draw(st.lists(st.integers(1, 700), max_size=8))
        chunks, rest = [], body
        for size in sizes:
            if rest:
                chunks.append(rest[:size])
                rest = rest[size:]
        if rest:
            chunks.append(rest)
        tail = b"".join(b"%x" % len(chunk) + newline + chunk + newline for chunk in chunks)
        tail += b"0" + newline + newline + extra
        expected_body, leftover, needs_eof = body[:MAX_KEPT_BODY], extra, False
        reusable = version == "1.1"
    else:
        tail, expected_body, leftover, needs_eof = body, body[:MAX_KEPT_BODY], b"", True
    expected = ProxyReply(version, status, reason, tuple(headers), expected_body, reusable)
    return wire + tail, expected, leftover if not needs_eof else b"\x00EOF"


_FRAMING_NAMES = {"content-length", "transfer-encoding", "connection", "proxy-connection"}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=valid_replies(), data=st.data())
def test_any_split_gives_the_same_reply_and_leftover(
    case: tuple[bytes, ProxyReply, bytes], data: st.DataObject
) -> None:
    wire, expected, leftover = case
    needs_eof = leftover == b"\x00EOF"
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=20)))
    pieces = [wire[start:end] for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    parser = ConnectReplyParser()
    replies = [reply for piece in pieces if (reply := parser.feed(piece)) is not None]
    if needs_eof:
        assert replies == []
        replies.append(parser.feed_eof())  # type: ignore[arg-type]
        leftover = b""
    assert replies == [expected]
    assert parser.leftover == leftover
