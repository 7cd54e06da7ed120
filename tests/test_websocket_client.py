"""The client path end to end on loopback: direct, through a tunnel, and
through every byte-level proxy misbehaviour of scenarios B-D."""

from __future__ import annotations

import base64
import re

import pytest
import trio

import tunnelws
from scripted_proxy import ScriptedProxy, Step
from tunnelws import (
    ConnectionClosed,
    ConnectionLostError,
    HandshakeError,
    PhaseTimeoutError,
    ProxyAuthError,
    ProxyConfigError,
    ProxyConnectError,
    ProxyProtocolError,
    ProxyRefusedError,
    TLSError,
)
from tunnelws._websocket import ReadyState, open_websocket


async def start_proxy(nursery: trio.Nursery, *steps: Step) -> ScriptedProxy:
    proxy = ScriptedProxy(list(steps) or [Step()], aliases={"origin.test": "127.0.0.1"})
    await nursery.start(proxy.serve)
    return proxy


async def echo_once(url: str, **kwargs: object) -> str | bytes:
    async with open_websocket(url, **kwargs) as ws:  # type: ignore[arg-type]
        await ws.send("hello")
        return await ws.receive()


# -- direct -----------------------------------------------------------------


async def test_direct_text_binary_and_states(origin) -> None:
    async with open_websocket(origin.ws_url(), proxy=None) as ws:
        assert ws.ready_state is ReadyState.OPEN
        await ws.send("text ü")
        assert await ws.receive() == "text ü"
        await ws.send(b"\x00\x01binary")
        assert await ws.receive() == b"\x00\x01binary"
        assert ws.buffered_amount == 0
        await ws.close(4001, "done here")
        assert ws.ready_state is ReadyState.CLOSED
        # The origin echoes the close code and reason.
        assert (ws.close_code, ws.close_reason) == (4001, "done here")
        with pytest.raises(ConnectionClosed):
            await ws.send("too late")


async def test_direct_wss_verifies_with_given_ca(origin, test_ca) -> None:
    reply = await echo_once(origin.wss_url(), proxy=None, ssl_context=test_ca.client_context())
    assert reply == "hello"


async def test_untrusted_certificate_is_a_tls_error(origin) -> None:
    with pytest.raises(TLSError) as info:
        await echo_once(origin.wss_url(), proxy=None)
    assert info.value.peer == "origin"
    assert info.value.exit_code == 9
    assert "could not be verified" in str(info.value)


async def test_messages_in_flight_at_close_are_delivered(origin) -> None:
    async with open_websocket(origin.ws_url(), proxy=None) as ws:
        for i in range(50):
            await ws.send(f"m{i}")
        await ws.close()
        received = [m async for m in ws]
    assert received == [f"m{i}" for i in range(50)]


async def test_subprotocol_and_headers_reach_origin(origin) -> None:
    async with open_websocket(
        origin.ws_url("/info"),
        proxy=None,
        subprotocols=["chat.v2", "chat.v1"],
        extra_headers=[("X-Probe", "42")],
    ) as ws:
        assert ws.subprotocol == "chat.v2"
        info = await ws.receive()
    assert isinstance(info, str)
    assert "X-Probe" in info or "x-probe" in info


# -- through a tunnel ------------------------------------------------------


@pytest.mark.parametrize("secure", [False, True])
async def test_tunnel_sends_connect_with_authority(nursery, origin, test_ca, secure) -> None:
    proxy = await start_proxy(nursery)
    url = origin.wss_url() if secure else origin.ws_url()
    reply = await echo_once(url, proxy=proxy.url, ssl_context=test_ca.client_context())
    assert reply == "hello"
    port = (origin.https if secure else origin.http)[1]
    head = proxy.requests[0].decode()
    assert head.startswith(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n")
    assert f"\r\nHost: 127.0.0.1:{port}\r\n" in head
    assert "User-Agent: tunnelws/" in head


async def test_proxy_from_environment_resolves_names_itself(nursery, origin, monkeypatch) -> None:
    proxy = await start_proxy(nursery)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    for name in ("http_proxy", "ws_proxy", "all_proxy", "no_proxy", "NO_PROXY", "REQUEST_METHOD"):
        monkeypatch.delenv(name, raising=False)
    # "origin.test" has no DNS entry here: only the proxy can resolve it.
    reply = await echo_once(f"ws://origin.test:{origin.http[1]}/echo")
    assert reply == "hello"
    assert proxy.requests[0].startswith(f"CONNECT origin.test:{origin.http[1]} ".encode())


async def test_loopback_never_uses_environment_proxy(nursery, origin, monkeypatch) -> None:
    proxy = await start_proxy(nursery)
    monkeypatch.setenv("http_proxy", proxy.url)
    assert await echo_once(origin.ws_url()) == "hello"
    assert proxy.requests == []


QUIRKY_SUCCESS = {
    "http10": Step(reply=b"HTTP/1.0 200 Connection established\r\n\r\n"),
    "2xx-quirks": Step(
        reply=b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    ),
    "dribble": Step(dribble=True),
    "lf-only": Step(reply=b"HTTP/1.1 200 OK\n\n"),
    "201": Step(reply=b"HTTP/1.1 201 Created\r\n\r\n"),
}


@pytest.mark.parametrize("quirk", sorted(QUIRKY_SUCCESS))
async def test_quirky_but_valid_replies_open_the_tunnel(nursery, origin, quirk) -> None:
    proxy = await start_proxy(nursery, QUIRKY_SUCCESS[quirk])
    assert await echo_once(origin.ws_url(), proxy=proxy.url) == "hello"


async def test_bytes_after_the_reply_belong_to_the_tunnel(nursery) -> None:
    proxy = await start_proxy(
        nursery, Step(reply=b"HTTP/1.1 200 OK\r\n\r\n", piggyback=b"early bytes", then="close")
    )
    stream = await tunnelws.open_tunnel("example.invalid", 7, proxy=proxy.url)
    received = b""
    while chunk := await stream.receive_some():
        received += chunk
    assert received == b"early bytes"
    await stream.aclose()


FAILURES = {
    "error-html": (
        Step(
            reply=b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\n"
            b"Content-Length: 24\r\n\r\n<html>bad gateway</html>",
            then="close",
        ),
        ProxyRefusedError,
        "502",
    ),
    "forbidden": (
        Step(reply=b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", then="close"),
        ProxyRefusedError,
        "403",
    ),
    "garbage": (
        Step(reply=b"SSH-2.0-OpenSSH_9.2\r\n\r\n", then="close"),
        ProxyProtocolError,
        "not HTTP",
    ),
    "close": (Step(reply=b"", then="close"), ProxyProtocolError, "without"),
    "huge-headers": (
        Step(reply=b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * 70000 + b"\r\n\r\n", then="close"),
        ProxyProtocolError,
        "65536",
    ),
}


@pytest.mark.parametrize("case", sorted(FAILURES))
async def test_proxy_failures_are_typed(nursery, origin, case) -> None:
    step, error_type, text = FAILURES[case]
    proxy = await start_proxy(nursery, step)
    with pytest.raises(error_type) as info:
        await echo_once(origin.ws_url(), proxy=proxy.url, fallback="never")
    assert text in str(info.value)
    if isinstance(info.value, ProxyRefusedError):
        assert str(info.value.status) == text
        if text == "502":
            assert b"bad gateway" in info.value.body


async def test_silent_proxy_times_out_naming_the_phase(nursery, origin) -> None:
    proxy = await start_proxy(nursery, Step(reply=b"", then="silent"))
    with trio.fail_after(5):
        with pytest.raises(PhaseTimeoutError) as info:
            await echo_once(origin.ws_url(), proxy=proxy.url, connect_timeout=0.5)
    assert info.value.phase == "tunnel"
    assert info.value.exit_code == 11


async def test_unreachable_proxy(origin) -> None:
    with pytest.raises(ProxyConnectError) as info:
        await echo_once(origin.ws_url(), proxy="http://127.0.0.1:9")
    assert info.value.exit_code == 5


async def test_unsupported_proxy_scheme(origin) -> None:
    with pytest.raises(ProxyConfigError):
        await echo_once(origin.ws_url(), proxy="ftp://127.0.0.1:21")


# -- authentication ----------------------------------------------------------

BASIC_407 = (
    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
    b'Proxy-Authenticate: Basic realm="corp"\r\nContent-Length: 0\r\n\r\n'
)
DIGEST_407 = (
    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
    b'Proxy-Authenticate: Digest realm="corp", qop="auth", nonce="abc123", algorithm=SHA-256\r\n'
    b"Connection: close\r\nContent-Length: 0\r\n\r\n"
)


async def test_basic_credentials_sent_preemptively_and_never_shown(nursery, origin) -> None:
    proxy = await start_proxy(nursery)
    trace: list[str] = []
    url = f"http://alice:p%40ss%3Aword@127.0.0.1:{proxy.port}"
    assert await echo_once(origin.ws_url(), proxy=url, trace=trace.append) == "hello"
    expected = base64.b64encode(b"alice:p@ss:word").decode()
    assert f"Proxy-Authorization: Basic {expected}" in proxy.requests[0].decode()
    joined = "\n".join(trace)
    assert "Proxy-Authorization: Basic ***" in joined
    assert expected not in joined and "p@ss" not in joined and "p%40ss" not in joined


async def test_missing_credentials(nursery, origin) -> None:
    proxy = await start_proxy(nursery, Step(reply=BASIC_407, then="next"))
    with pytest.raises(ProxyAuthError) as info:
        await echo_once(origin.ws_url(), proxy=proxy.url)
    assert info.value.schemes == ["Basic"]
    assert len(proxy.requests) == 1


async def test_wrong_credentials_two_connects_at_most(nursery, origin) -> None:
    proxy = await start_proxy(nursery, Step(reply=BASIC_407, then="next"))
    with pytest.raises(ProxyAuthError) as info:
        await echo_once(origin.ws_url(), proxy=proxy.url, proxy_auth=("alice", "s3cret!"))
    assert "s3cret!" not in str(info.value) and "s3cret!" not in repr(info.value)
    assert len(proxy.requests) <= 2


async def test_407_with_close_retries_once_on_a_new_connection(nursery, origin) -> None:
    proxy = await start_proxy(nursery, Step(reply=DIGEST_407, then="close"), Step())
    trace: list[str] = []
    reply = await echo_once(
        origin.ws_url(), proxy=proxy.url, proxy_auth=("alice", "s3cret"), trace=trace.append
    )
    assert reply == "hello"
    assert proxy.connections == 2
    second = proxy.requests[1].decode()
    assert re.search(r'Proxy-Authorization: Digest .*username="alice"', second)
    assert "s3cret" not in second and "s3cret" not in "\n".join(trace)


# -- after the upgrade ---------------------------------------------------------


async def test_rejected_upgrade_is_a_handshake_error(origin) -> None:
    with pytest.raises(HandshakeError) as info:
        await echo_once(origin.ws_url("/no-such-path"), proxy=None, fallback="never")
    assert info.value.status == 404


async def test_tunnel_reset_reports_abnormal_close_fast(nursery, origin) -> None:
    proxy = await start_proxy(nursery)
    async with open_websocket(origin.ws_url(), proxy=proxy.url) as ws:
        await ws.send("one")
        assert await ws.receive() == "one"
        # Killing the proxy's relay tasks resets the tunnel.
        nursery.cancel_scope.cancel()
        with trio.fail_after(1), pytest.raises(ConnectionLostError) as info:
            await ws.receive()
    assert info.value.code == 1006


@pytest.mark.parametrize("ping_interval", [None, 0.15])
async def test_keepalive_pings_keep_idle_killing_proxies_happy(nursery, origin, ping_interval):
    proxy = await start_proxy(nursery, Step(idle_timeout=0.5))
    async with open_websocket(origin.ws_url(), proxy=proxy.url, ping_interval=ping_interval) as ws:
        await trio.sleep(1.2)
        if ping_interval is None:
            with pytest.raises(ConnectionClosed):
                await ws.send("after idle")
                await ws.receive()
            assert ws.ready_state is ReadyState.CLOSED
        else:
            await ws.send("after idle")
            assert await ws.receive() == "after idle"


async def test_pipelined_large_messages_through_a_tunnel_do_not_deadlock(nursery, origin):
    # Sending 64 KiB messages while receiving their echoes fills every socket
    # buffer on the way; a reader that waited on the send side would hang.
    proxy = await start_proxy(nursery)
    message = bytes(range(256)) * 256
    count = 300
    async with open_websocket(origin.ws_url(), proxy=proxy.url) as ws:

        async def sender() -> None:
            for _ in range(count):
                await ws.send(message)

        with trio.fail_after(30):
            async with trio.open_nursery() as senders:
                senders.start_soon(sender)
                for _ in range(count):
                    assert await ws.receive() == message


async def test_restricting_schemes_keeps_basic_off_the_wire(nursery, origin) -> None:
    digest_keepalive = DIGEST_407.replace(b"Connection: close\r\n", b"")
    proxy = await start_proxy(nursery, Step(reply=digest_keepalive, then="next"), Step())
    reply = await echo_once(
        origin.ws_url(),
        proxy=proxy.url,
        proxy_auth=("alice", "s3cret"),
        proxy_auth_schemes="digest",
    )
    assert reply == "hello"
    first, second = (request.decode() for request in proxy.requests)
    assert "Proxy-Authorization" not in first  # no preemptive Basic
    assert "Proxy-Authorization: Digest " in second


async def test_close_waits_while_echoes_still_arrive_over_a_slow_link(nursery, origin) -> None:
    # 48 KiB each way at 32 KB/s: ~1.5 s up, then ~1.5 s of echo arriving.
    # The whole close takes ~3 s, longer than close_timeout, but the server
    # is never silent for 2 s: close_timeout bounds silence, nothing is lost.
    from tunnelws_testnet.companion import ProxyConfig, Toxics, serve_proxy

    proxy = await nursery.start(serve_proxy, ProxyConfig(toxics=Toxics(bandwidth=32 * 1024)))
    message = b"\x42" * (48 * 1024)
    with trio.fail_after(20):
        async with open_websocket(origin.ws_url(), proxy=proxy.url, close_timeout=2.0) as ws:
            await ws.send(message)
            await ws.close()
            received = [m async for m in ws]
    assert received == [message]
    assert ws.close_code == 1000
