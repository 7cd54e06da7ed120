"""The HTTP fallback's client: the same connection object as a native
WebSocket, carried by ordinary requests when WebSocket cannot pass.

Against the real origin server (``tunnelws_testnet.origin``, whose /echo
offers the fallback), real squid, the companion proxy (forward-only,
stripping Upgrade, buffering, resetting responses, intercepting TLS), and, for
the byte-level misbehaviours, ``fault_proxy`` (a transparent filter) and
``scripted_fallback`` (a scripted server).
"""

from __future__ import annotations

import json
import ssl
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
import trio

from companion_support import start_proxy
from fault_proxy import FaultProxy, serve_fault_proxy
from peers import run_squid
from scripted_fallback import ScriptedFallback, event, http_reply, open_answer, sse_reply
from scripted_proxy import ScriptedProxy, Step
from tunnelws import (
    CheckOptions,
    ConnectionClosed,
    ConnectionLostError,
    FallbackFailedError,
    HandshakeError,
    PhaseTimeoutError,
    ProxyAuthError,
    ProxyRefusedError,
    ReadyState,
    TLSError,
    open_websocket,
    run_check,
)
from tunnelws._errors import DirectConnectError
from tunnelws._fallback_policy import fallback_reason
from tunnelws._fallback_wire import SessionLimits
from tunnelws._target import parse_target
from tunnelws_testnet.companion import Toxics
from tunnelws_testnet.fallback import FallbackConfig
from tunnelws_testnet.origin import OriginAddresses, OriginConfig, RequestInfo, serve_origin
from tunnelws_testnet.peers import ProxyProcess

USER, PASSWORD = "alice", "d1gest-s3cret"


@pytest.fixture(scope="module")
def squid_no_connect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    """squid refusing every CONNECT; forwarded requests pass (and it strips Upgrade)."""
    with run_squid(tmp_path=tmp_path_factory.mktemp("squid-no-connect"), allow_ports=()) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def squid_default(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    """squid's stock policy: CONNECT only to 443, forwarded requests allowed."""
    with run_squid(tmp_path=tmp_path_factory.mktemp("squid-default")) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def squid_digest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    with run_squid(
        tmp_path=tmp_path_factory.mktemp("squid-digest"),
        allow_ports=(),
        digest_auth=(USER, PASSWORD),
    ) as proxy:
        yield proxy


@asynccontextmanager
async def running_origin(**options: object) -> AsyncIterator[OriginAddresses]:
    async with trio.open_nursery() as nursery:
        addresses: OriginAddresses = await nursery.start(serve_origin, OriginConfig(**options))  # type: ignore[arg-type]
        yield addresses
        nursery.cancel_scope.cancel()


async def transparent_filter(
    nursery: trio.Nursery, origin: OriginAddresses, **options: bool
) -> FaultProxy:
    return await nursery.start(
        lambda task_status: serve_fault_proxy(origin.http, **options, task_status=task_status)
    )


async def forward_only(nursery: trio.Nursery, **options: object):  # type: ignore[no-untyped-def]
    """The companion as a forward-only proxy: CONNECT refused, Upgrade stripped."""
    return await start_proxy(nursery, refuse_connect=True, strip_upgrade=True, **options)


async def echo_all(ws: object, messages: list[str | bytes]) -> list[str | bytes]:
    for message in messages:
        await ws.send(message)  # type: ignore[attr-defined]
    return [await ws.receive() for _ in messages]  # type: ignore[attr-defined]


# -- the same API, carried by the fallback -------------------------------------------


MESSAGES: list[str | bytes] = [
    "plain",
    "two\nlines\n",
    "cr\r\nlf\rlone cr",
    "ünïcødé ✓ \U0001f600",
    "",
    bytes(range(256)),
    b"",
    "x" * 100_000,
]


async def test_fallback_only_carries_text_binary_subprotocol_and_close(origin) -> None:
    async with open_websocket(
        origin.ws_url("/echo"), proxy=None, fallback="only", subprotocols=["chat.v2", "other"]
    ) as ws:
        assert ws.transport == "http-fallback"
        assert ws.fallback_reason == "fallback='only'"
        assert ws.fallback_mode == "streaming"
        assert ws.subprotocol == "chat.v2"
        assert ws.ready_state is ReadyState.OPEN
        assert "http-fallback" in repr(ws)
        assert await echo_all(ws, MESSAGES) == MESSAGES
        await ws.send("last")
        await ws.close(4001, "done here")
        assert ws.ready_state is ReadyState.CLOSED
        assert (ws.close_code, ws.close_reason) == (4001, "done here")
        assert await ws.receive() == "last"  # what arrived before the close stays readable
        with pytest.raises(ConnectionClosed) as closed:
            await ws.send("too late")
        assert closed.value.code == 4001
    assert [m async for m in ws] == []


async def test_upstream_posts_share_one_kept_connection_with_the_open() -> None:
    seen: list[RequestInfo] = []
    async with (
        running_origin(on_request=seen.append) as origin,
        open_websocket(origin.ws_url("/echo"), proxy=None, fallback="only") as ws,
    ):
        assert await echo_all(ws, [f"m{i}" for i in range(20)]) == [f"m{i}" for i in range(20)]
    requests = [(info.request_line.split()[1].rsplit("/", 1)[-1], info.client) for info in seen]
    up = {client for name, client in requests if name in ("open", "up")}
    down = {client for name, client in requests if name == "down"}
    assert sum(name == "up" for name, _ in requests) >= 2
    # The open's connection carries every upstream POST; the streamed
    # downstream (which ends its connection) never takes it.
    assert len(up) == 1 and not up & down


async def test_async_iteration_ends_at_the_servers_close(origin) -> None:
    async with open_websocket(origin.ws_url("/echo"), proxy=None, fallback="only") as ws:
        await ws.send("one")
        assert await ws.receive() == "one"
        assert ws.buffered_amount == 0
        await ws.close()
        received = [message async for message in ws]
    assert received == [] and ws.close_code == 1000


async def test_native_is_still_native_and_says_so(origin) -> None:
    async with open_websocket(origin.ws_url("/echo"), proxy=None) as ws:
        assert ws.transport == "websocket"
        assert ws.fallback_reason is None and ws.fallback_mode is None
        assert await echo_all(ws, ["n"]) == ["n"]


async def test_wss_fallback_goes_through_a_connect_tunnel_and_tls(nursery, origin, test_ca) -> None:
    proxy = await start_proxy(nursery)
    async with open_websocket(
        origin.wss_url("/echo"),
        proxy=proxy.url,
        fallback="only",
        ssl_context=test_ca.client_context(),
    ) as ws:
        assert await echo_all(ws, ["secure", b"\x00"]) == ["secure", b"\x00"]
    # https:// requests go through CONNECT (one tunnel per kept connection),
    # never in absolute form.
    assert proxy.stats.connects >= 1 and proxy.stats.absolute_form == 0


# -- when it falls back (and when not) ---------------------------------------------------


async def test_squid_refusing_connect_falls_back_to_forwarded_requests(
    origin, squid_no_connect
) -> None:
    trace: list[str] = []
    async with open_websocket(
        origin.ws_url("/echo"), proxy=squid_no_connect.url, trace=trace.append
    ) as ws:
        assert ws.transport == "http-fallback"
        assert ws.fallback_reason is not None and "403" in ws.fallback_reason
        assert await echo_all(ws, ["a", "b", "c"]) == ["a", "b", "c"]
        with trio.fail_after(5):
            await ws._transport.mode_settled.wait()  # type: ignore[attr-defined]
        assert ws.fallback_mode == "streaming"  # squid passes streamed responses on
    text = "\n".join(trace)
    assert "trying the HTTP fallback" in text and "downstream: streaming" in text
    port = origin.http[1]
    await squid_no_connect.wait_for_access_log_async(
        f"POST http://127.0.0.1:{port}/echo/_tunnelws/1/open"
    )
    # squid logs the streamed GET only once it has ended, after the close.
    await squid_no_connect.wait_for_access_log_async(
        f"GET http://127.0.0.1:{port}/echo/_tunnelws/1/"
    )


async def test_squid_default_passes_ws_on_a_high_port_through_the_fallback(
    origin, squid_default
) -> None:
    async with open_websocket(origin.ws_url("/echo"), proxy=squid_default.url) as ws:
        assert ws.transport == "http-fallback"
        assert await echo_all(ws, ["through squid"]) == ["through squid"]


async def test_absolute_form_answers_squids_digest_challenge(origin, squid_digest) -> None:
    trace: list[str] = []
    async with open_websocket(
        origin.ws_url("/echo"),
        proxy=squid_digest.url,
        proxy_auth=(USER, PASSWORD),
        trace=trace.append,
    ) as ws:
        assert ws.transport == "http-fallback"
        assert await echo_all(ws, ["digest", "twice"]) == ["digest", "twice"]
    text = "\n".join(trace)
    assert "Proxy-Authorization: Digest ***" in text and PASSWORD not in text
    log = await squid_digest.wait_for_access_log_async("/_tunnelws/1/open")
    assert f" {USER} " in log


async def test_absolute_form_keeps_the_ntlm_connection_across_its_407s(nursery, origin) -> None:
    proxy = await start_proxy(nursery, auth=("DOMAIN\\bob", "ntlm-pass"), auth_scheme="ntlm")
    async with open_websocket(
        origin.ws_url("/echo"),
        proxy=proxy.url,
        proxy_auth=("DOMAIN\\bob", "ntlm-pass"),
        fallback="only",
    ) as ws:
        assert await echo_all(ws, ["ntlm"]) == ["ntlm"]
    # Each request on a new connection (the companion forwards one per
    # connection): the bare request, NTLM's first message (sent without the
    # body, so the proxy keeps the connection) and its answer, all on it.
    stats = proxy.stats
    assert stats.forwards >= 3 and stats.connects == 0
    assert stats.statuses[407] == 2 * stats.forwards
    assert stats.absolute_form == 3 * stats.forwards


async def test_stripped_upgrade_falls_back(nursery, origin) -> None:
    # A transparent filter in front of the origin drops Upgrade.
    url = (await transparent_filter(nursery, origin)).ws_url()
    async with open_websocket(url, proxy=None) as ws:
        assert ws.transport == "http-fallback"
        assert ws.fallback_reason is not None and "instead of 101" in ws.fallback_reason
        assert await echo_all(ws, ["stripped"]) == ["stripped"]


async def test_a_101_followed_by_nothing_falls_back(nursery, origin) -> None:
    url = (await transparent_filter(nursery, origin, pass_101=True)).ws_url()
    started = trio.current_time()
    async with open_websocket(url, proxy=None) as ws:
        assert ws.fallback_reason is not None and "followed by nothing" in ws.fallback_reason
        assert await echo_all(ws, ["after the mute 101"]) == ["after the mute 101"]
    assert trio.current_time() - started < 10
    # fallback="never" does not probe: the mute WebSocket is handed out as
    # before (and its first receive would wait for the application's timeout).
    async with open_websocket(url, proxy=None, fallback="never") as ws:
        assert ws.transport == "websocket"


@pytest.mark.parametrize(
    ("error", "url", "helps"),
    [
        (ProxyRefusedError("x", status=403, reason="Forbidden"), "ws://h/", True),
        (ProxyRefusedError("x", status=405, reason=""), "ws://h/", True),
        (ProxyRefusedError("x", status=403, reason="Forbidden"), "wss://h/", False),
        (ProxyRefusedError("x", status=502, reason="Bad Gateway"), "ws://h/", False),
        (ProxyRefusedError("x", status=2, reason="not allowed by ruleset"), "ws://h/", False),
        (HandshakeError("x", status=426), "wss://h/", True),
        (HandshakeError("x", status=101), "ws://h/", True),
        (HandshakeError("closed during the handshake"), "ws://h/", True),
        (ProxyAuthError("x"), "ws://h/", False),
        (TLSError("x", peer="origin"), "wss://h/", False),
        (PhaseTimeoutError("x", phase="tunnel", timeout=1), "ws://h/", False),
        (DirectConnectError("x"), "ws://h/", False),
    ],
)
def test_which_failures_fall_back(error, url, helps) -> None:
    assert (fallback_reason(error, parse_target(url)) is not None) is helps


async def test_never_past_a_tls_verification_failure(nursery, origin) -> None:
    proxy = await start_proxy(nursery)
    with pytest.raises(TLSError):  # not FallbackFailedError: no fallback was tried
        async with open_websocket(origin.wss_url("/echo"), proxy=proxy.url) as ws:
            await ws.send("never")
    assert proxy.stats.connects == 1


async def test_never_past_a_407(nursery, origin) -> None:
    proxy = await start_proxy(nursery, auth=("u", "p"))
    with pytest.raises(ProxyAuthError):
        async with open_websocket(origin.ws_url("/echo"), proxy=proxy.url):
            pass
    assert proxy.stats.absolute_form == 0


async def test_never_past_a_timeout(nursery, origin) -> None:
    proxy = ScriptedProxy([Step(reply=b"", then="silent")])
    await nursery.start(proxy.serve)
    with pytest.raises(PhaseTimeoutError):
        async with open_websocket(origin.ws_url("/echo"), proxy=proxy.url, connect_timeout=0.5):
            pass
    assert proxy.connections == 1


async def test_fallback_never_keeps_the_native_error(origin, squid_no_connect) -> None:
    with pytest.raises(ProxyRefusedError) as info:
        async with open_websocket(
            origin.ws_url("/echo"), proxy=squid_no_connect.url, fallback="never"
        ):
            pass
    assert info.value.status == 403


async def test_both_failing_is_one_error_naming_both(origin, squid_no_connect) -> None:
    started = trio.current_time()
    with pytest.raises(FallbackFailedError) as info:
        async with open_websocket(origin.ws_url("/no-such-path"), proxy=squid_no_connect.url):
            pass
    error = info.value
    assert isinstance(error.native, ProxyRefusedError) and isinstance(
        error.fallback, HandshakeError
    )
    assert error.fallback.status == 404
    assert (error.category, error.exit_code) == ("proxy-refused", 7)
    # Code that catches the native error keeps catching it, with its details.
    assert isinstance(error, ProxyRefusedError) and error.status == 403
    assert "403" in str(error) and "no HTTP fallback" in str(error)
    assert trio.current_time() - started < 5  # explicit failures: no waiting


# -- the command line --------------------------------------------------------------------


async def run_connect(url: str, proxy: str, fallback: str) -> trio.Process:
    command = [sys.executable, "-m", "tunnelws", "connect", url, "--proxy", proxy]
    return await trio.run_process(
        [*command, "--fallback", fallback, "-v"],
        stdin=b"a\nb\nc\n",
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


@pytest.mark.parametrize(
    ("fallback", "code", "printed"), [("auto", 0, b"a\nb\nc\n"), ("never", 7, b"")]
)
async def test_connect_through_squid_refusing_connect(
    origin, squid_no_connect, fallback, code, printed
) -> None:
    result = await run_connect(origin.ws_url("/echo"), squid_no_connect.url, fallback)
    assert (result.returncode, result.stdout) == (code, printed), result.stderr[-2000:]
    if fallback == "auto":
        assert b"through the HTTP fallback (the proxy refused CONNECT (403" in result.stderr
        assert b"downstream: streaming" in result.stderr


@pytest.mark.parametrize(
    ("fallback", "code", "printed"), [("auto", 0, b"a\nb\nc\n"), ("never", 7, b"")]
)
async def test_connect_through_a_forward_only_proxy_stripping_upgrade(
    nursery, origin, fallback, code, printed
) -> None:
    proxy = await forward_only(nursery)
    result = await run_connect(origin.ws_url("/echo"), proxy.url, fallback)
    assert (result.returncode, result.stdout) == (code, printed), result.stderr[-2000:]
    assert proxy.stats.statuses[405] == 1  # the one CONNECT, refused
    if fallback == "never":
        assert b"proxy-refused" in result.stderr and proxy.stats.absolute_form == 0


# -- long-polling, resets, bounded buffers -----------------------------------------------


@pytest.mark.parametrize(
    ("reset_fraction", "window"),
    # The 1 % (messages sent back to back go in batches of up to a
    # window: about 100 requests); then many more requests and resets.
    [(0.01, 256), (0.05, 16)],
)
async def test_buffering_proxy_with_resets_loses_duplicates_and_reorders_nothing(
    nursery, reset_fraction: float, window: int
) -> None:
    """10,000 numbered messages each way through a forward-only proxy that
    buffers responses (up to 1 MiB or their end) and resets some of them in
    the middle of the body."""
    proxy = await forward_only(
        nursery,
        buffer_responses=1 << 20,
        reset_responses=reset_fraction,
        toxics=Toxics(seed=11),
    )
    count = 10_000
    received: list[int] = []
    fallback = FallbackConfig(limits=SessionLimits(window=window))
    with trio.fail_after(120):
        async with (
            running_origin(fallback=fallback) as origin,
            open_websocket(origin.ws_url("/echo"), proxy=proxy.url) as ws,
        ):
            assert ws.transport == "http-fallback"

            async def send_all() -> None:
                for number in range(count):
                    await ws.send(str(number))

            async with trio.open_nursery() as senders:
                senders.start_soon(send_all)
                while len(received) < count:
                    received.append(int(await ws.receive()))
            assert ws.fallback_mode == "long-polling"
    assert received == list(range(count))
    stats = proxy.stats
    # At most a window per request, each way.
    assert stats.forwards > count // window and stats.statuses[405] == 1
    assert stats.responses_reset >= 1
    print(f"responses reset: {stats.responses_reset} of {stats.forwards}")


async def test_request_time_limits_and_body_caps_are_lived_with(nursery, origin) -> None:
    # Every request cut after 1 s (the streamed downstream too), bodies above
    # 4 KiB refused with 413 (the batches get smaller).
    proxy = await forward_only(nursery, request_time_limit=1.0, max_request_body=4096)
    messages = [f"{number:04d}" + "x" * 500 for number in range(40)]
    with trio.fail_after(20):
        async with open_websocket(origin.ws_url("/echo"), proxy=proxy.url) as ws:
            for message in messages:
                await ws.send(message)
            assert [await ws.receive() for _ in messages] == messages
            await trio.sleep(2.5)  # past two cuts of the streamed response
            assert await echo_all(ws, ["still there"]) == ["still there"]
            with pytest.raises(ConnectionLostError) as info:
                await ws.send("y" * 5000)  # cannot fit in any request the path takes
                await ws.receive()
    assert "413" in info.value.reason
    assert proxy.stats.statuses[413] >= 1


async def test_tls_interception_dropping_the_upgrade_falls_back_inside_tls(
    nursery, origin, test_ca, tmp_path
) -> None:
    proxy = await start_proxy(
        nursery,
        intercept=True,
        strip_upgrade=True,
        ca_dir=tmp_path,
        onward_ssl_context=test_ca.client_context(),
    )
    assert proxy.ca_path is not None
    trusting = ssl.create_default_context(cafile=str(proxy.ca_path))
    async with open_websocket(origin.wss_url("/echo"), proxy=proxy.url, ssl_context=trusting) as ws:
        assert ws.transport == "http-fallback"
        assert ws.fallback_reason is not None and "instead of 101" in ws.fallback_reason
        assert await echo_all(ws, ["inspected"]) == ["inspected"]
    assert proxy.stats.intercepted >= 2


async def test_send_blocks_on_a_full_window_and_memory_stays_bounded() -> None:
    limits = SessionLimits(window=4)
    async with (
        running_origin(fallback=FallbackConfig(limits=limits)) as origin,
        open_websocket(origin.ws_url("/echo"), proxy=None, fallback="only") as ws,
    ):
        # Nobody reads: the echoes fill the server's window, then its
        # buffer, then ours; send() must block instead of queueing.
        sent = 0
        with trio.move_on_after(2):
            while True:
                await ws.send("x" * 1000)
                sent += 1
        assert 4 <= sent < 200
        assert ws.buffered_amount <= 4 * 1000
        queued = len(ws._transport._messages)  # type: ignore[attr-defined]
        assert queued <= 4
        assert [await ws.receive() for _ in range(sent)] == ["x" * 1000] * sent


async def test_a_message_too_big_for_the_fallback_is_refused_at_send(origin) -> None:
    async with open_websocket(origin.ws_url("/echo"), proxy=None, fallback="only") as ws:
        with pytest.raises(ValueError, match="per request"):
            await ws.send(b"\xff" * (1024 * 1024))
        assert await echo_all(ws, ["still open"]) == ["still open"]


async def test_a_vanished_session_is_a_lost_connection_at_once() -> None:
    first_server = trio.CancelScope()

    async def first(task_status: trio.TaskStatus[OriginAddresses]) -> None:
        with first_server:
            await serve_origin(OriginConfig(), task_status=task_status)

    async with trio.open_nursery() as nursery:
        addresses: OriginAddresses = await nursery.start(first)
        async with open_websocket(addresses.ws_url("/echo"), proxy=None, fallback="only") as ws:
            assert await echo_all(ws, ["before"]) == ["before"]
            first_server.cancel()
            # The same port, a new server: it never heard of the session.
            await nursery.start(serve_origin, OriginConfig(port=addresses.http[1]))
            with trio.fail_after(5), pytest.raises(ConnectionLostError) as info:
                await ws.send("after")
                await ws.receive()
        nursery.cancel_scope.cancel()
    assert info.value.code == 1006 and "no longer knows the session" in info.value.reason


# -- answers no real server gives --------------------------------------------------------


async def scripted(nursery: trio.Nursery, *down: bytes, **options: object) -> ScriptedFallback:
    server = ScriptedFallback(list(down), **options)  # type: ignore[arg-type]
    await nursery.start(server.serve)
    return server


BROKEN = {
    "garbage": (b"\x16\x03\x01\x02\x00 not HTTP at all\r\n\r\n", 1002, "malformed"),
    "not an event stream": (http_reply(200, b"<html>", "text/html"), 1002, "not an event stream"),
    "unknown session": (
        http_reply(404, b'{"error": "unknown session"}'),
        1006,
        "no longer knows the session",
    ),
    "gap": (sse_reply(event(2, data="skipped one")), 1002, "messages were lost"),
    "bad base64": (
        sse_reply(b"event: binary\nid: 1\ndata: !!!\n\n"),
        1002,
        "base64",
    ),
    "ack beyond": (sse_reply(b"event: ack\ndata: 99\n\n"), 1002, "never sent"),
    "bad status": (http_reply(418, b"teapot"), 1002, "418"),
    "huge event": (sse_reply(b"data: " + b"a" * 200_000 + b"\n"), 1009, "larger"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
async def test_broken_answers_end_the_session_with_a_typed_error(nursery, case) -> None:
    reply, code, reason = BROKEN[case]
    server = await scripted(nursery, reply)
    async with open_websocket(
        server.url, proxy=None, fallback="only", max_message_size=10_000
    ) as ws:
        with trio.fail_after(5), pytest.raises(ConnectionLostError) as info:
            await ws.receive()
    assert info.value.code == code
    assert reason in info.value.reason
    assert ws.ready_state is ReadyState.CLOSED


async def test_repeats_are_dropped_and_a_truncated_body_resumes(nursery) -> None:
    first = sse_reply(event(1, data="a"), event(2, data="b"), truncate=30)
    second = sse_reply(
        event(1, data="a"), event(1, data="a"), event(2, data="b"), event(3, "close", "", 1000)
    )
    server = await scripted(nursery, first, second)
    async with open_websocket(server.url, proxy=None, fallback="only") as ws:
        with trio.fail_after(5):
            received = [message async for message in ws]
    assert received == ["a", "b"]
    assert ws.close_code == 1000
    # The reconnect resumed after what the application had taken, and the
    # close was answered and acknowledged.
    assert server.down_headers[1].get("last-event-id") in (None, "1")
    closes = [m for body in server.up_bodies for m in body["messages"] if m["type"] == "close"]
    assert closes == [{"seq": 1, "type": "close", "code": 1000, "reason": ""}]
    assert server.up_bodies[-1]["ack"] == 3


async def test_a_silent_server_expires_the_session(nursery) -> None:
    server = await scripted(nursery, b"")  # every downstream request: closed at once
    started = trio.current_time()
    async with open_websocket(server.url, proxy=None, fallback="only") as ws:
        with trio.fail_after(10), pytest.raises(ConnectionLostError) as info:
            await ws.receive()
    assert "has not answered for 2 s" in info.value.reason
    assert 1.5 < trio.current_time() - started < 6


OPEN_FAILURES = {
    "no fallback": (http_reply(404, b"not found"), "offers no HTTP fallback"),
    "not json": (http_reply(201, b"{nope"), "not JSON"),
    "bad session": (http_reply(201, json.dumps(open_answer(session="../x")).encode()), "session"),
    "version 2": (http_reply(201, json.dumps(open_answer(version=2)).encode()), "version"),
    "bad limit": (
        http_reply(201, json.dumps(open_answer(limits={"window": -1})).encode()),
        "window",
    ),
    "unoffered subprotocol": (
        http_reply(201, json.dumps(open_answer(subprotocol="evil")).encode()),
        "not offered",
    ),
    "backend refused": (
        http_reply(502, b'{"error": "backend said no", "status": 403}'),
        "backend refused the WebSocket: 403",
    ),
}


@pytest.mark.parametrize("case", sorted(OPEN_FAILURES))
async def test_unusable_open_answers_are_handshake_errors(nursery, case) -> None:
    reply, text = OPEN_FAILURES[case]
    server = await scripted(nursery, b"", open_reply=reply)
    with trio.fail_after(5), pytest.raises(HandshakeError) as info:
        async with open_websocket(server.url, proxy=None, fallback="only"):
            pass
    assert text in str(info.value)


# -- tunnelws check: does the fallback work here? ------------------------------------------


async def test_check_tries_the_fallback_when_connect_is_refused(origin, squid_no_connect) -> None:
    report = await run_check(origin.ws_url("/echo"), CheckOptions(proxy=squid_no_connect.url))
    assert report.failure is not None and report.failure.name == "connect"
    assert report.exit_code == 7  # the report is about the WebSocket path
    step = report.step("fallback")
    assert step is not None and step.status == "ok"
    assert "streaming" in step.summary and "round trip median" in step.summary
    assert report.failure.diagnosis is not None
    assert report.failure.diagnosis.remedy.startswith(
        "tunnelws works here through its HTTP fallback"
    )
    assert report.to_dict()["steps"][-1]["step"] == "fallback"


async def test_check_reports_long_polling_behind_a_buffering_filter(nursery, origin) -> None:
    url = (await transparent_filter(nursery, origin, buffer=True)).ws_url()
    report = await run_check(url, CheckOptions(proxy=None))
    assert report.failure is not None and report.failure.name == "upgrade"
    step = report.step("fallback")
    assert step is not None and step.status == "ok" and "long-polling" in step.summary


async def test_check_says_when_the_fallback_fails_too(origin, squid_no_connect) -> None:
    report = await run_check(
        origin.ws_url("/no-such-path"), CheckOptions(proxy=squid_no_connect.url)
    )
    step = report.step("fallback")
    assert step is not None and step.status == "fail"
    assert step.diagnosis is not None and step.diagnosis.cause == "fallback-failed"
    assert report.failure is not None and report.failure.name == "connect"
    assert report.exit_code == 7
    assert report.failure.diagnosis is not None
    assert "fallback" not in report.failure.diagnosis.remedy


async def test_check_skips_the_fallback_where_it_cannot_help(nursery, origin) -> None:
    proxy = await start_proxy(nursery, auth=("u", "p"))
    report = await run_check(origin.ws_url("/echo"), CheckOptions(proxy=proxy.url))
    assert report.failure is not None and report.failure.diagnosis is not None
    assert report.failure.diagnosis.category == "proxy-auth"
    assert report.step("fallback") is None


async def test_extra_headers_go_with_the_session_and_every_request(nursery) -> None:
    server = await scripted(nursery, sse_reply(event(1, "close", "", 1000)))
    async with open_websocket(
        server.url,
        proxy=None,
        fallback="only",
        extra_headers=[("X-Client", "42"), ("Content-Length", "9"), ("Cookie", "a=1")],
    ) as ws:
        with trio.fail_after(5):
            assert [message async for message in ws] == []
    down = server.down_headers[0]
    assert (down["x-client"], down["cookie"]) == ("42", "a=1")
    assert "9" not in down.get("content-length", "")  # the protocol's own headers stay its own


async def test_info_over_the_fallback_reports_the_handshake_headers(origin) -> None:
    async with open_websocket(
        origin.ws_url("/info"), proxy=None, fallback="only", extra_headers=[("X-Client", "42")]
    ) as ws:
        info = json.loads(await ws.receive())
    assert info["transport"] == "fallback"
    assert ["X-Client", "42"] in info["fallback"]["headers_in_body"]
    assert sum(1 for name, value in info["headers"] if (name, value) == ("X-Client", "42")) >= 1
