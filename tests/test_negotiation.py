"""The Sans-IO CONNECT negotiation on byte lists: what it answers to each
proxy reply, and what it records; and the one route-options builder."""

from __future__ import annotations

import typing
from dataclasses import fields

import pytest

from tunnelws import Credentials, RouteOptions, route_options
from tunnelws._connect import ConnectReplyParser, ProxyReply
from tunnelws._errors import ProxyAuthError, ProxyConfigError, ProxyProtocolError, ProxyRefusedError
from tunnelws._negotiation import (
    ComputeAnswer,
    ConnectNegotiation,
    NegotiationState,
    SendRequest,
    TunnelFailed,
    TunnelOpen,
)
from tunnelws._route_options import RouteKeywords

BASIC_407 = (
    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
    b'Proxy-Authenticate: Basic realm="corp"\r\nContent-Length: 0\r\n\r\n'
)
DIGEST_407 = (
    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
    b'Proxy-Authenticate: Digest realm="corp", nonce="n1", qop="auth"\r\n'
)
NTLM_407 = (
    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
    b"Proxy-Authenticate: NTLM\r\nContent-Length: 0\r\n\r\n"
)
SECRET = "pa55word"


def negotiation(**kwargs: typing.Any) -> ConnectNegotiation:
    return ConnectNegotiation("origin.example", 443, proxy_host="proxy", **kwargs)


def test_open_keeps_the_tunnel_bytes_read_with_the_reply() -> None:
    n = negotiation()
    first = n.start()
    assert first.data.startswith(b"CONNECT origin.example:443 HTTP/1.1\r\nHost: origin.example:443")
    assert not first.reconnect
    assert n.receive_data(b"HTTP/1.1 200 OK\r\n") is None
    action = n.receive_data(b"\r\nfirst tunnel bytes")
    assert action == TunnelOpen(b"first tunnel bytes")
    assert n.state is NegotiationState.OPEN
    (attempt,) = n.attempts
    assert (attempt.status, attempt.credentials_scheme, attempt.closed_after) == (200, None, False)


def test_challenge_answered_on_the_same_connection_when_reusable() -> None:
    n = negotiation(credentials=Credentials("alice", SECRET), schemes=["digest"])
    assert b"Proxy-Authorization" not in n.start().data  # no preemptive Basic: Digest only
    action = n.receive_data(DIGEST_407 + b"Content-Length: 0\r\n\r\n")
    assert isinstance(action, SendRequest) and not action.reconnect
    assert b'Proxy-Authorization: Digest username="alice"' in action.data
    assert n.receive_data(b"HTTP/1.1 200 OK\r\n\r\n") == TunnelOpen(b"")
    assert [a.credentials_scheme for a in n.attempts] == [None, "Digest"]
    assert [a.offered_schemes for a in n.attempts] == [("Digest",), ()]


def test_challenge_then_close_means_a_new_connection() -> None:
    n = negotiation(credentials=Credentials("alice", SECRET), schemes=["digest"])
    n.start()
    # No Content-Length: the body runs to the close, so the connection is done.
    assert n.receive_data(DIGEST_407 + b"\r\n") is None
    action = n.receive_data(b"")
    assert isinstance(action, SendRequest) and action.reconnect
    assert n.attempts[0].closed_after and n.attempts[1].new_connection


def test_leftover_after_a_407_is_not_trusted() -> None:
    n = negotiation(credentials=Credentials("alice", SECRET), schemes=["digest"])
    n.start()
    action = n.receive_data(DIGEST_407 + b"Content-Length: 0\r\n\r\nHTTP/1.1 200 early")
    assert isinstance(action, SendRequest) and action.reconnect


def test_an_ntlm_answer_is_computed_by_the_driver_then_sent() -> None:
    """NTLM/Negotiate go through GSSAPI, which may block: the negotiation
    hands the computation to its driver (a worker thread) and waits."""
    n = negotiation(credentials=Credentials("CORP\\alice", SECRET))
    assert b"Proxy-Authorization" not in n.start().data  # no Basic for a Windows name
    action = n.receive_data(NTLM_407)
    assert isinstance(action, ComputeAnswer)
    assert n.state is NegotiationState.ANSWERING
    with pytest.raises(RuntimeError, match="ANSWERING"):
        n.receive_data(b"HTTP/1.1 200 OK\r\n\r\n")  # nothing was sent yet
    sent = n.answer(action.compute())  # real pyspnego: the NTLM negotiate message
    assert isinstance(sent, SendRequest) and not sent.reconnect
    assert b"Proxy-Authorization: NTLM TlRMTVNTUAAB" in sent.data
    assert n.state is NegotiationState.AWAITING_REPLY
    with pytest.raises(RuntimeError, match="AWAITING_REPLY"):
        n.answer("NTLM again")


def test_only_connection_bound_schemes_need_the_driver_step() -> None:
    n = negotiation(credentials=Credentials("alice", SECRET))
    n.start()
    auth = n.authenticator
    assert not auth.may_block(_reply(BASIC_407))
    assert not auth.may_block(_reply(DIGEST_407 + b"Content-Length: 0\r\n\r\n"))
    assert auth.may_block(_reply(NTLM_407))
    assert not negotiation(
        credentials=Credentials("alice", SECRET), schemes=["basic"]
    ).authenticator.may_block(_reply(NTLM_407))


def test_a_failed_computation_fails_the_negotiation() -> None:
    # A bare NTLM challenge after our first token: the proxy said no.
    n = negotiation(credentials=Credentials("CORP\\alice", SECRET))
    n.start()
    first = n.receive_data(NTLM_407)
    assert isinstance(first, ComputeAnswer)
    n.answer(first.compute())
    second = n.receive_data(NTLM_407)
    assert isinstance(second, ComputeAnswer)
    failed = n.answer(second.compute())
    assert isinstance(failed, TunnelFailed) and isinstance(failed.error, ProxyAuthError)
    assert "rejected the NTLM initial token" in str(failed.error)
    assert n.state is NegotiationState.FAILED


def _reply(data: bytes) -> ProxyReply:
    parser = ConnectReplyParser()
    reply = parser.feed(data)
    assert reply is not None
    return reply


def test_rejected_credentials_fail_with_the_auth_error() -> None:
    n = negotiation(credentials=Credentials("alice", SECRET))
    assert b"Proxy-Authorization: Basic " in n.start().data
    action = n.receive_data(BASIC_407)
    assert isinstance(action, TunnelFailed)
    assert isinstance(action.error, ProxyAuthError)
    assert "rejected the Basic credentials for user 'alice'" in str(action.error)
    assert SECRET not in str(action.error) and SECRET not in repr(n)
    assert n.state is NegotiationState.FAILED and n.error is action.error


def test_refusal_names_the_status_and_the_port_hint() -> None:
    n = ConnectNegotiation("origin.example", 8080)
    n.start()
    action = n.receive_data(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n\r\nnope")
    assert isinstance(action, TunnelFailed) and isinstance(action.error, ProxyRefusedError)
    assert action.error.status == 403 and action.error.body == b"nope"
    assert "only to port 443" in str(action.error)


def test_garbage_is_recorded_with_its_prefix() -> None:
    n = negotiation()
    n.start()
    action = n.receive_data(b"\x16\x03\x01\x00\x05hello")
    assert isinstance(action, TunnelFailed) and isinstance(action.error, ProxyProtocolError)
    attempt = n.attempts[-1]
    assert attempt.status is None and attempt.prefix == b"\x16\x03\x01\x00\x05hello"
    assert attempt.received == 10 and "not HTTP" in (attempt.error or "")


def test_broken_connection_is_a_protocol_error() -> None:
    n = negotiation()
    n.start()
    action = n.connection_broken("reset by peer")
    assert isinstance(action.error, ProxyProtocolError)
    assert "broke while negotiating" in str(action.error)


def test_a_failed_negotiation_takes_no_more_bytes() -> None:
    n = negotiation()
    n.start()
    n.receive_data(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(RuntimeError):
        n.receive_data(b"more")
    with pytest.raises(RuntimeError):
        n.start()


def test_unknown_scheme_is_a_config_error() -> None:
    with pytest.raises(ProxyConfigError, match="unknown proxy authentication scheme"):
        negotiation(schemes=["kerberos5"])


def test_trace_shows_the_exchange_with_credentials_redacted() -> None:
    lines: list[str] = []
    n = negotiation(credentials=Credentials("alice", SECRET), trace=lines.append)
    n.start()
    n.receive_data(b"HTTP/1.1 200 OK\r\n\r\n")
    assert "> CONNECT origin.example:443 HTTP/1.1" in lines
    assert "> Proxy-Authorization: Basic ***" in lines
    assert "< HTTP/1.1 200 OK" in lines
    assert "* Tunnel to origin.example:443 established" in lines
    assert not any(SECRET in line for line in lines)


# -- route options ------------------------------------------------------------


def test_route_keywords_are_exactly_the_route_fields() -> None:
    assert set(RouteKeywords.__annotations__) == {f.name for f in fields(RouteOptions)}


def test_route_options_normalises_and_overrides() -> None:
    base = RouteOptions(proxy="http://proxy:3128", connect_timeout=3.0)
    merged = route_options(base, proxy_headers=[("X-A", "1")], proxy_auth_schemes="ntlm")
    assert merged.proxy == "http://proxy:3128" and merged.connect_timeout == 3.0
    assert merged.proxy_headers == (("X-A", "1"),)
    assert merged.proxy_auth_schemes == ("ntlm",)
    assert route_options(base) is base
    with pytest.raises(TypeError, match="unknown route option"):
        route_options(proxyy="http://x")  # type: ignore[call-arg]


def test_route_options_repr_hides_credentials() -> None:
    options = route_options(proxy=f"http://bob:{SECRET}@proxy:3128", proxy_auth=("bob", SECRET))
    assert SECRET not in repr(options)
    assert "proxy_auth=***" in repr(options)
