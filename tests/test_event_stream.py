"""The trio event stream client against a scripted server, the real
transport (direct, TLS, through pproxy) and the real origin's /timestamp."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

from peers import run_pproxy
from sse_support import Reply, ScriptedSSEServer
from tunnelws._errors import (
    ConnectionLostError,
    DirectConnectError,
    HandshakeError,
    PhaseTimeoutError,
    ProxyAuthError,
)
from tunnelws._event_stream import EventStream, ReadyState, open_event_stream
from tunnelws._sse import ServerSentEvent
from tunnelws._target import Target, parse_target
from tunnelws._transport import open_origin_stream
from tunnelws_testnet.peers import ProxyProcess

E = ServerSentEvent
FAST_RETRY = b"retry: 10\n\n"


async def start(nursery: trio.Nursery, *replies: Reply) -> tuple[ScriptedSSEServer, str]:
    server = ScriptedSSEServer.script(*replies)
    port = await nursery.start(server.serve)
    return server, f"http://127.0.0.1:{port}/events?x=1"


async def collect(events: EventStream, limit: int = 100) -> list[E]:
    received = []
    async for event in events:
        received.append(event)
        assert len(received) <= limit
    return received


def open_direct(url: str, **kwargs: Any) -> Any:
    return open_event_stream(url, proxy=None, connect_timeout=5.0, **kwargs)


async def test_events_and_request_headers(nursery: trio.Nursery) -> None:
    server, url = await start(
        nursery,
        Reply(body=[b"event: greet\nid: a1\ndata: hello\ndata: world\n\n", b"data: 2\n\n"]),
    )
    async with open_direct(url, reconnect=False, headers=[("X-Test", "yes")]) as events:
        assert events.ready_state == ReadyState.OPEN
        assert events.url == url
        received = await collect(events)
        assert events.ready_state is ReadyState.CLOSED
    assert received == [E("greet", "hello\nworld", "a1"), E("message", "2", "a1")]
    assert events.last_event_id == "a1"
    (request,) = server.requests
    assert (request.method, request.target) == ("GET", "/events?x=1")
    assert request.header("host") == url.split("/")[2]
    assert request.header("accept") == "text/event-stream"
    assert request.header("cache-control") == "no-cache"
    assert request.header("x-test") == "yes"
    assert request.header("last-event-id") is None
    assert (request.header("user-agent") or "").startswith("tunnelws/")


async def test_reconnects_with_last_event_id(nursery: trio.Nursery) -> None:
    server, url = await start(
        nursery,
        # Closed in the middle of the third event: it is discarded.
        Reply(body=[FAST_RETRY, b"id: 1\ndata: one\n\nid: 2\ndata: two\n\n", b"id: 3\ndata: lo"]),
        Reply(body=[b"data: three\n\nid: 4\ndata: four\n\n"]),
        Reply(status=204, reason="No Content", content_type=None),
    )
    started = trio.current_time()
    async with open_direct(url) as events:
        received = await collect(events)
        assert events.ready_state is ReadyState.CLOSED
        assert events.reconnects == 2
        assert events.retry == pytest.approx(0.010)
    assert [(e.data, e.id) for e in received] == [
        ("one", "1"), ("two", "2"), ("three", "2"), ("four", "4"),
    ]  # fmt: skip
    assert [r.header("last-event-id") for r in server.requests] == [None, "2", "4"]
    # Two reconnection delays of 10 ms each were waited, not the 3 s default.
    assert 0.02 <= trio.current_time() - started < 2.0


async def test_initial_last_event_id_sent(nursery: trio.Nursery) -> None:
    server, url = await start(nursery, Reply(body=[b"data: x\n\n"]))
    async with open_direct(url, reconnect=False, last_event_id="41") as events:
        assert await collect(events) == [E(data="x", id="41")]
    assert server.requests[0].header("last-event-id") == "41"


async def test_empty_id_stops_sending_header(nursery: trio.Nursery) -> None:
    server, url = await start(
        nursery,
        Reply(body=[FAST_RETRY, b"id: 7\ndata: a\n\nid\ndata: b\n\n"]),
        Reply(status=204, reason="No Content", content_type=None),
    )
    async with open_direct(url) as events:
        assert [e.id for e in await collect(events)] == ["7", ""]
    assert server.requests[1].header("last-event-id") is None


async def test_204_at_start_ends_cleanly(nursery: trio.Nursery) -> None:
    _, url = await start(nursery, Reply(status=204, reason="No Content", content_type=None))
    async with open_direct(url) as events:
        assert events.ready_state is ReadyState.CLOSED
        assert await collect(events) == []


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply(status=500, reason="Oops", content_type="text/plain", body=[b"it broke"]), "500"),
        (Reply(status=404, reason="Not Found", content_type="text/plain"), "404"),
        (Reply(status=301, reason="Moved", headers=[("Location", "/x")]), "301"),
        (Reply(content_type="text/html", body=[b"<html>"]), "text/html"),
        (Reply(content_type=None, body=[b"data: x\n\n"]), "Content-Type none"),
    ],
)
async def test_refusals_raise_handshake_error(
    nursery: trio.Nursery, reply: Reply, expected: str
) -> None:
    server, url = await start(nursery, reply)
    with pytest.raises(HandshakeError) as info:
        async with open_direct(url):
            pytest.fail("must not get here")
    assert expected in str(info.value)
    assert info.value.status == reply.status
    assert info.value.exit_code == 10
    if reply.content_type == "text/html":
        assert info.value.body == b"<html>"
    if reply.status == 500:
        assert info.value.body == b"it broke"
        assert ("Content-Type", "text/plain") in [(k.title(), v) for k, v in info.value.headers]
    assert len(server.requests) == 1  # never retried


async def test_content_type_parameters_and_case(nursery: trio.Nursery) -> None:
    _, url = await start(
        nursery, Reply(content_type="Text/Event-Stream ; charset=utf-8", body=[b"data: ok\n\n"])
    )
    async with open_direct(url, reconnect=False) as events:
        assert await collect(events) == [E(data="ok")]


async def test_refusal_on_reconnect_raises_after_events(nursery: trio.Nursery) -> None:
    server, url = await start(
        nursery,
        Reply(body=[FAST_RETRY, b"id: 1\ndata: a\n\n"]),
        Reply(content_type="text/html", body=[b"<html>login</html>"]),
    )
    received = []
    async with open_direct(url) as events:
        with pytest.raises(HandshakeError, match="text/html"):
            async for event in events:
                received.append(event)
        assert events.ready_state is ReadyState.CLOSED
    assert received == [E(data="a", id="1")]
    assert server.requests[1].header("last-event-id") == "1"


async def test_chunked_body(nursery: trio.Nursery) -> None:
    _, url = await start(
        nursery,
        Reply(
            chunked=True, body=[b"data: sp", 0.01, b"lit\r", b"\n\r\ndata: \xe2\x82", b"\xac\n\n"]
        ),
    )
    async with open_direct(url, reconnect=False) as events:
        assert await collect(events) == [E(data="split"), E(data="€")]


async def test_max_reconnects_then_ends(nursery: trio.Nursery) -> None:
    server, url = await start(
        nursery, Reply(body=[FAST_RETRY, b"data: 1\n\n"]), Reply(body=[b"data: 2\n\n"])
    )
    async with open_direct(url, max_reconnects=1) as events:
        assert [e.data for e in await collect(events)] == ["1", "2"]
        assert events.reconnects == 1
    assert len(server.requests) == 2


async def test_default_reconnect_delay_parameter(nursery: trio.Nursery) -> None:
    # No retry field: reconnect_delay applies.
    _, url = await start(nursery, Reply(body=[b"data: 1\n\n"]), Reply(body=[b"data: 2\n\n"]))
    async with open_direct(url, max_reconnects=1, reconnect_delay=0.2) as events:
        assert events.retry == 0.2
        before = trio.current_time()
        assert [e.data for e in await collect(events)] == ["1", "2"]
        assert trio.current_time() - before >= 0.2


async def test_transient_reconnect_failures_are_retried(nursery: trio.Nursery) -> None:
    """A failing reconnection is retried; a non-transient failure is not."""
    _, url = await start(
        nursery,
        Reply(body=[FAST_RETRY, b"id: 1\ndata: a\n\n"]),
        Reply(body=[b"data: b\n\n"]),
    )
    failures: list[BaseException] = [DirectConnectError("refused"), DirectConnectError("again")]
    opened: list[Target] = []

    async def opener(target: Target) -> trio.abc.Stream:
        opened.append(target)
        if len(opened) > 1 and failures:
            raise failures.pop(0)
        return await trio.open_tcp_stream(target.host, target.port)

    async with open_event_stream(url, _open_stream=opener, max_reconnects=3) as events:
        assert [e.data for e in await collect(events)] == ["a", "b"]
        assert events.reconnects == 3
    assert len(opened) == 4

    # Authentication failures will not fix themselves.
    _, url = await start(nursery, Reply(body=[FAST_RETRY, b"data: a\n\n"]))
    calls = 0

    async def failing_opener(target: Target) -> trio.abc.Stream:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise ProxyAuthError("proxy wants credentials", schemes=["Basic"])
        return await trio.open_tcp_stream(target.host, target.port)

    async with open_event_stream(url, _open_stream=failing_opener) as events:
        with pytest.raises(ProxyAuthError):
            await collect(events)
    assert calls == 2


async def test_reconnect_budget_exhausted_by_failures(nursery: trio.Nursery) -> None:
    _, url = await start(nursery, Reply(body=[FAST_RETRY, b"data: a\n\n"]))
    calls = 0

    async def opener(target: Target) -> trio.abc.Stream:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise DirectConnectError(f"refused #{calls}")
        return await trio.open_tcp_stream(target.host, target.port)

    async with open_event_stream(url, _open_stream=opener, max_reconnects=2) as events:
        with pytest.raises(DirectConnectError, match="#3"):
            await collect(events)
        assert events.ready_state is ReadyState.CLOSED


async def test_server_gone_on_reconnect_through_real_transport(nursery: trio.Nursery) -> None:
    # The first connection succeeds, then nothing listens on the port.
    _, url = await start(nursery, Reply(body=[FAST_RETRY, b"data: a\n\n"]))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    dead_url = f"http://127.0.0.1:{dead_port}/"

    opened = 0

    async def opener_then_dead(target: Target) -> trio.abc.Stream:
        nonlocal opened
        opened += 1
        if opened > 1:
            target = parse_target(dead_url)
        return await open_origin_stream(target, proxy=None, connect_timeout=2.0)

    async with open_event_stream(url, _open_stream=opener_then_dead, max_reconnects=2) as events:
        with pytest.raises(DirectConnectError) as info:
            await collect(events)
    assert info.value.exit_code == 4


async def test_no_reconnect_ends_iteration(nursery: trio.Nursery) -> None:
    server, url = await start(nursery, Reply(body=[b"data: only\n\n"]))
    async with open_direct(url, reconnect=False) as events:
        assert await collect(events) == [E(data="only")]
    assert len(server.requests) == 1


async def test_read_timeout_without_reconnect(nursery: trio.Nursery) -> None:
    _, url = await start(nursery, Reply(body=[b"data: a\n\n"], hold=True))
    async with open_direct(url, reconnect=False, read_timeout=0.2) as events:
        assert await events.__anext__() == E(data="a")
        with pytest.raises(PhaseTimeoutError) as info:
            await events.__anext__()
    assert info.value.phase == "connected"
    assert info.value.timeout == 0.2


PINGS: list[bytes | float] = [0.1, b": ping\n"] * 5


async def test_read_timeout_reconnects_and_comments_keep_alive(nursery: trio.Nursery) -> None:
    server, url = await start(
        nursery,
        # Comments every 0.1 s keep the 0.3 s read timeout from firing...
        Reply(body=[FAST_RETRY, b"id: 1\ndata: a\n\n", *PINGS], hold=True),
        Reply(body=[b"data: b\n\n"]),
    )
    async with open_direct(url, read_timeout=0.3, max_reconnects=1) as events:
        assert [e.data for e in await collect(events)] == ["a", "b"]
    # ...then silence does, and the reconnection resumes.
    assert server.requests[1].header("last-event-id") == "1"


async def test_response_head_timeout(nursery: trio.Nursery) -> None:
    _, url = await start(nursery, Reply(silent=True))
    before = trio.current_time()
    with pytest.raises(PhaseTimeoutError) as info:
        async with open_event_stream(url, proxy=None, connect_timeout=0.3):
            pass
    assert info.value.phase == "websocket"
    assert 0.25 <= trio.current_time() - before < 2.0


async def test_closed_before_answer(nursery: trio.Nursery) -> None:
    _, url = await start(nursery, Reply(raw=b""))
    with pytest.raises(ConnectionLostError, match="before answering"):
        async with open_direct(url):
            pass


async def test_malformed_response(nursery: trio.Nursery) -> None:
    _, url = await start(nursery, Reply(raw=b"SSH-2.0-OpenSSH_9.6\r\n\r\n"))
    with pytest.raises(HandshakeError, match="malformed HTTP response"):
        async with open_direct(url):
            pass


async def test_informational_response_skipped(nursery: trio.Nursery) -> None:
    _, url = await start(
        nursery,
        Reply(
            raw=b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"
            b"Content-Type: text/event-stream\r\nConnection: close\r\n\r\ndata: x\n\n"
        ),
    )
    async with open_direct(url, reconnect=False) as events:
        assert await collect(events) == [E(data="x")]


async def test_event_too_large(nursery: trio.Nursery) -> None:
    server, url = await start(nursery, Reply(body=[FAST_RETRY, b"data: " + b"x" * 5000 + b"\n\n"]))
    async with open_direct(url, max_event_size=1000) as events:
        with pytest.raises(ConnectionLostError, match="1000"):
            await collect(events)
        assert events.ready_state is ReadyState.CLOSED
    assert len(server.requests) == 1  # not retried: it would only fail again


async def test_cancellation_closes_connection(nursery: trio.Nursery) -> None:
    server, url = await start(nursery, Reply(body=[b"data: a\n\n"], hold=True))
    closed = server.client_closed
    with trio.move_on_after(0.3) as scope:
        async with open_direct(url) as events:
            async for _ in events:
                pass
    assert scope.cancelled_caught
    with trio.fail_after(2):
        await closed.wait()


async def test_aclose_ends_iteration(nursery: trio.Nursery) -> None:
    server, url = await start(nursery, Reply(body=[b"data: a\n\ndata: b\n\n"], hold=True))
    async with open_direct(url) as events:
        assert (await events.__anext__()).data == "a"
        await events.aclose()
        await events.aclose()
        assert events.ready_state is ReadyState.CLOSED
        assert await collect(events) == []
    assert len(server.requests) == 1


async def test_aclose_from_another_task_ends_iteration(nursery: trio.Nursery) -> None:
    _, url = await start(nursery, Reply(body=[b"data: a\n\n"], hold=True))
    received: list[E] = []
    first = trio.Event()
    finished = trio.Event()

    async def consume(events: EventStream) -> None:
        async for event in events:
            received.append(event)
            first.set()
        finished.set()  # reached only if the iteration ended without error

    async with open_direct(url) as events, trio.open_nursery() as inner:
        inner.start_soon(consume, events)
        with trio.fail_after(5):
            await first.wait()
            await events.aclose()
            await finished.wait()
    assert received == [E(data="a")]


async def test_request_target_percent_encoded(nursery: trio.Nursery) -> None:
    server, url = await start(nursery, Reply(body=[b"data: x\n\n"]))
    base = url.split("/events")[0]
    async with open_direct(f"{base}/caf\u00e9 bar?q=%41", reconnect=False) as events:
        await collect(events)
    assert server.requests[0].target == "/caf%C3%A9%20bar?q=%41"


async def test_control_characters_in_id_not_sent(nursery: trio.Nursery) -> None:
    server, url = await start(
        nursery,
        Reply(body=[FAST_RETRY, b"id: a\x01b\ndata: x\n\n"]),
        Reply(status=204, reason="No Content", content_type=None),
    )
    async with open_direct(url) as events:
        assert [e.id for e in await collect(events)] == ["a\x01b"]
    assert server.requests[1].header("last-event-id") is None


async def test_trace_redacts_and_reports(nursery: trio.Nursery) -> None:
    _, url = await start(
        nursery,
        Reply(body=[FAST_RETRY, b"id: 5\ndata: a\n\n"]),
        Reply(status=204, reason="No Content", content_type=None),
    )
    lines: list[str] = []
    async with open_direct(
        url, trace=lines.append, headers=[("Authorization", "Bearer s3cret-token")]
    ) as events:
        await collect(events)
    text = "\n".join(lines)
    assert "s3cret" not in text
    assert "> Authorization: Bearer ***" in text
    assert "> GET /events?x=1 HTTP/1.1" in text
    assert "< HTTP/1.1 200 OK" in text
    assert "reconnection delay to 10 ms" in text
    assert "Reconnecting in 0.01 s (attempt 1) with Last-Event-ID: 5" in text
    assert "204 No Content" in text


@pytest.mark.parametrize(
    "kwargs",
    [
        {"connect_timeout": 0},
        {"read_timeout": -1},
        {"reconnect_delay": -1},
        {"max_reconnects": -1},
    ],
)
async def test_invalid_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        async with open_event_stream("http://127.0.0.1:9/", proxy=None, **kwargs):
            pass


async def test_websocket_url_rejected() -> None:
    with pytest.raises(ValueError, match="http:// or https://"):
        async with open_event_stream("ws://127.0.0.1:9/", proxy=None):
            pass


# -- Through the real transport: TLS and a real proxy -------------------------


@pytest.fixture(scope="module")
def tls_pair() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context) from a throwaway CA."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


async def test_https_url(nursery: trio.Nursery, tls_pair: tuple[ssl.SSLContext, ...]) -> None:
    server_context, client_context = tls_pair
    script = ScriptedSSEServer.script(Reply(body=[b"data: secret\n\n"]))

    async def serve_tls(*, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        tls_listeners = [trio.SSLListener(lst, server_context) for lst in listeners]
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(script._handle, tls_listeners)

    port = await nursery.start(serve_tls)
    url = f"https://127.0.0.1:{port}/secure"
    async with open_direct(url, reconnect=False, ssl_context=client_context) as events:
        assert await collect(events) == [E(data="secret")]
    assert script.requests[0].header("host") == f"127.0.0.1:{port}"


@pytest.fixture
def pproxy(tmp_path: Path) -> Iterator[ProxyProcess]:
    with run_pproxy(auth=("sse-user", "sse-pass"), tmp_path=tmp_path) as proxy:
        yield proxy


async def test_through_pproxy_with_auth_and_resume(
    nursery: trio.Nursery, pproxy: ProxyProcess
) -> None:
    server, url = await start(
        nursery,
        Reply(body=[FAST_RETRY, b"id: 1\ndata: via proxy\n\n"]),
        Reply(body=[b"id: 2\ndata: again\n\n"]),
        Reply(status=204, reason="No Content", content_type=None),
    )
    lines: list[str] = []
    async with open_event_stream(
        url, proxy=pproxy.url, proxy_auth=("sse-user", "sse-pass"), trace=lines.append
    ) as events:
        assert [e.data for e in await collect(events)] == ["via proxy", "again"]
    assert [r.header("last-event-id") for r in server.requests] == [None, "1", "2"]
    # Every connection, reconnections included, went through the tunnel.
    assert sum(line.startswith("> CONNECT 127.0.0.1:") for line in lines) == 3
    assert "sse-pass" not in "\n".join(lines)


async def test_proxy_auth_failure_is_typed(nursery: trio.Nursery, pproxy: ProxyProcess) -> None:
    server, url = await start(nursery, Reply(body=[b"data: never\n\n"]))
    with pytest.raises(ProxyAuthError) as info:
        async with open_event_stream(url, proxy=pproxy.url, connect_timeout=5.0):
            pass
    assert info.value.exit_code == 6
    assert server.requests == []


# -- End to end against the real origin's /timestamp ---------------------------


@pytest.fixture
async def origin_url(nursery: trio.Nursery) -> AsyncIterator[str]:
    from tunnelws_testnet.origin import OriginConfig, serve_origin

    addresses = await nursery.start(serve_origin, OriginConfig(host="127.0.0.1", port=0))
    yield addresses.http_url("").rstrip("/")


async def test_origin_timestamp_resume(origin_url: str) -> None:
    url = f"{origin_url}/timestamp?interval=0.02&count=5&close_after=2&retry=10"
    async with open_direct(url) as events:
        received = await collect(events)
        assert events.reconnects == 3  # after ids 2, 4 and 5 (then 204)
        assert events.ready_state is ReadyState.CLOSED
    assert [e.id for e in received] == ["1", "2", "3", "4", "5"]
    assert all(e.type == "message" and e.data.endswith("Z") for e in received)


# -- The CLI: `tunnelws events` ------------------------------------------------

CLI = [sys.executable, "-m", "tunnelws", "events"]


async def run_cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    with trio.fail_after(30):
        return await trio.run_process(
            [*CLI, *args], capture_stdout=True, capture_stderr=True, check=False, env=env
        )


async def test_cli_text_output_and_count(nursery: trio.Nursery) -> None:
    server, url = await start(
        nursery,
        Reply(
            body=[b"event: multi\ndata: a\ndata: b\\c\n\n", b"id: 2\ndata: two\n\n"],
            hold=True,  # --count, not the end of the stream, makes it exit
        ),
    )
    result = await run_cli(url, "--no-proxy", "--count", "2", "-H", "X-Who: cli")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines() == ["multi: a\\nb\\\\c", "message: two"]
    assert server.requests[0].header("x-who") == "cli"


async def test_cli_json_until_stream_ends(nursery: trio.Nursery) -> None:
    server, url = await start(
        nursery,
        Reply(body=[FAST_RETRY, "id: 1\ndata: é\n\n".encode()]),
        Reply(body=[b"event: last\ndata: 2\n\n"]),
        Reply(status=204, reason="No Content", content_type=None),
    )
    result = await run_cli(url, "--no-proxy", "--json", "--last-event-id", "0", "-v")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert lines == [
        {"type": "message", "data": "é", "id": "1"},
        {"type": "last", "data": "2", "id": "1"},
    ]
    assert [r.header("last-event-id") for r in server.requests] == ["0", "1", "1"]
    stderr = result.stderr.decode()
    assert "> GET /events?x=1 HTTP/1.1" in stderr
    assert "* Reconnecting in 0.01 s" in stderr


async def test_cli_max_reconnects_zero(nursery: trio.Nursery) -> None:
    server, url = await start(nursery, Reply(body=[FAST_RETRY, b"data: once\n\n"]))
    result = await run_cli(url, "--no-proxy", "--max-reconnects", "0")
    assert (result.returncode, result.stdout) == (0, b"message: once\n")
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("reply", "code", "category"),
    [
        (Reply(status=503, reason="Busy", content_type="text/plain"), 10, "handshake"),
        (Reply(content_type="text/html"), 10, "handshake"),
        (Reply(silent=True), 11, "timeout"),
    ],
)
async def test_cli_errors_are_one_line(
    nursery: trio.Nursery, reply: Reply, code: int, category: str
) -> None:
    _, url = await start(nursery, reply)
    result = await run_cli(url, "--no-proxy", "--connect-timeout", "0.5")
    stderr = result.stderr.decode()
    assert result.returncode == code, stderr
    assert len(stderr.splitlines()) == 1
    assert stderr.startswith(f"tunnelws: {category}: ")
    assert result.stdout == b""


@pytest.mark.parametrize(
    "args",
    [["ws://127.0.0.1:9/"], ["not a url"], ["http://127.0.0.1:9/", "--count", "0"]],
)
async def test_cli_usage_errors(args: list[str]) -> None:
    result = await run_cli(*args, "--no-proxy")
    assert result.returncode == 2
    assert b"Traceback" not in result.stderr


async def test_cli_direct_connect_refused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = await run_cli(f"http://127.0.0.1:{port}/", "--no-proxy")
    assert result.returncode == 4
    assert result.stderr.decode().startswith("tunnelws: connect: ")


async def test_cli_through_pproxy(nursery: trio.Nursery, pproxy: ProxyProcess) -> None:
    _, url = await start(nursery, Reply(body=[b"data: tunnelled\n\n"], hold=True))
    result = await run_cli(
        url, "--proxy", pproxy.url, "--proxy-user", "sse-user:sse-pass", "--count", "1", "-v"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"message: tunnelled\n"
    assert b"CONNECT 127.0.0.1:" in result.stderr
    assert b"sse-pass" not in result.stderr
    # Without credentials the proxy's 407 becomes exit code 6.
    denied = await run_cli(url, "--proxy", pproxy.url, "--count", "1")
    assert denied.returncode == 6


async def test_cli_origin_timestamp(origin_url: str) -> None:
    result = await run_cli(f"{origin_url}/timestamp?interval=0.02", "--no-proxy", "--json",
                           "--count", "3")  # fmt: skip
    assert result.returncode == 0, result.stderr
    ids = [json.loads(line)["id"] for line in result.stdout.decode().splitlines()]
    assert ids == ["1", "2", "3"]
