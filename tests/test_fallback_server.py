"""The server end of the HTTP fallback: the session state (pure) and the
engine's endpoints over real HTTP, on the origin's /echo and /info and with
applications made for the test."""

from __future__ import annotations

import base64
import itertools
import json
import subprocess

import pytest
import trio

from conftest import require_binary
from fallback_support import (
    Client,
    decode_events,
    http_request,
    messages_of,
    read_stream,
    serving_app,
    text,
)
from origin_support import running_origin
from tunnelws.fallback import (
    Ack,
    End,
    FallbackMessage,
    FallbackProtocolError,
    Heartbeat,
    SessionLimits,
    UpstreamBatch,
)
from tunnelws_testnet.fallback import (
    Accepted,
    Close,
    FallbackConfig,
    FallbackSocket,
    Rejected,
)
from tunnelws_testnet.fallback._state import SequenceGap, SessionState

# -- the session state, Sans-IO -----------------------------------------------------


def _batch(*seqs: int, ack: int = 0) -> UpstreamBatch:
    return UpstreamBatch(ack, tuple(FallbackMessage(s, "text", f"m{s}") for s in seqs))


def test_state_takes_each_message_once_in_order_and_refuses_gaps() -> None:
    state = SessionState("s", SessionLimits(), 1 << 20, now=0.0)
    assert state.take_upstream(_batch(1, 2), 0.0) == 2
    assert state.take_upstream(_batch(1, 2, 3), 0.0) == 3  # a retry after a lost answer
    with pytest.raises(SequenceGap):
        state.take_upstream(_batch(4, 6), 0.0)
    assert state.up.received == 3, "nothing of a batch with a gap is taken"
    assert [state.pop() for _ in range(4)] == ["m1", "m2", "m3", None]
    with pytest.raises(FallbackProtocolError, match="never sent"):
        state.take_upstream(_batch(ack=1), 0.0)


def test_state_bounds_the_queue_towards_the_application() -> None:
    state = SessionState("s", SessionLimits(window=3), 1 << 20, now=0.0)
    assert state.take_upstream(_batch(1, 2, 3, 4, 5), 0.0) == 3
    assert not state.room_again()
    assert state.pop() == "m1"
    assert state.room_again() and not state.room_again(), "said once"
    assert state.take_upstream(_batch(4, 5), 0.0) == 4
    # Bytes bound too, but one message always passes (no wedged session).
    big = SessionState("b", SessionLimits(), 10, now=0.0)
    assert big.take_upstream(UpstreamBatch(0, (FallbackMessage(1, "binary", b"x" * 50),)), 0) == 1


def test_state_downstream_window_blocks_the_sender_until_acknowledged() -> None:
    state = SessionState("s", SessionLimits(window=2), 1 << 20, now=0.0)
    state.push("a")
    state.push("b")
    assert not state.can_send
    state.ack_down(1, 0.0)
    assert state.can_send
    assert [m.data for m in state.pending_after(0)] == ["b"]
    small = SessionState("s", SessionLimits(), 4, now=0.0)
    small.push(b"12345")
    assert not small.can_send, "byte bound"


def test_state_too_big_message_closes_with_1009_and_drops_the_rest() -> None:
    state = SessionState("s", SessionLimits(max_message_size=3), 1 << 20, now=0.0)
    batch = UpstreamBatch(
        0, (FallbackMessage(1, "text", "ok"), FallbackMessage(2, "text", "toolong"),
            FallbackMessage(3, "text", "after"))
    )
    assert state.take_upstream(batch, 0.0) == 3, "acknowledged, so never resent"
    assert state.pop() == "ok" and state.pop() is None
    assert state.local_close is not None and state.local_close.code == 1009


def test_state_close_handshake_then_forgotten_after_a_heartbeat() -> None:
    state = SessionState("s", SessionLimits(heartbeat=2.0, expires=30.0), 1 << 20, now=0.0)
    state.take_upstream(UpstreamBatch(0, (FallbackMessage(1, "close", "bye", 4000),)), 1.0)
    assert state.pop() == Close(4000, "bye")
    state.push_close(4000, "bye", 1.0)
    assert state.finished_at is None, "our close is not acknowledged yet"
    state.ack_down(1, 1.5)
    assert state.finished_at == 1.5
    assert not state.forgettable(3.0) and state.forgettable(3.5)


def test_state_expires_without_requests_and_tells_the_application_1006() -> None:
    state = SessionState("s", SessionLimits(expires=5.0), 1 << 20, now=0.0)
    state.open_requests = 1
    assert not state.expired(100.0), "an open request keeps the session"
    state.open_requests = 0
    assert not state.expired(5.0) and state.expired(5.1)
    state.end("session expired")
    assert state.pop() == Close(1006, "session expired", clean=False)


# -- the origin's /echo and /info over the fallback ---------------------------------


async def test_echo_keeps_types_order_subprotocol_and_echoes_the_close() -> None:
    async with running_origin() as origin:
        client = Client(origin.http, "/echo")
        opened = await client.open(subprotocols=["chat.v2", "chat.v1"])
        assert opened.status == 201 and opened.headers["cache-control"] == "no-store"
        assert client.opened["subprotocol"] == "chat.v2"
        assert client.opened["limits"]["window"] == 256
        assert len(client.session) >= 22  # 128+ random bits
        binary = base64.b64encode(bytes(range(256))).decode()
        reply = await client.up(
            [text(1, "two\nlines"), text(2, "cr\rcrlf\r\n"),
             {"seq": 3, "type": "binary", "data": binary}]
        )
        assert reply.json() == {"ack": 3}
        got = messages_of(await client.poll_events())
        assert [(m.seq, m.kind, m.data) for m in got] == [
            (1, "text", "two\nlines"), (2, "text", "cr\rcrlf\r\n"), (3, "binary", bytes(range(256)))
        ]
        reply = await client.up([{"seq": 4, "type": "close", "code": 4001, "reason": "bye"}], ack=3)
        assert reply.json() == {"ack": 4}
        (close,) = messages_of(await client.poll_events(3))
        assert (close.kind, close.code, close.data) == ("close", 4001, "bye")


async def test_info_reports_the_fallback_and_the_session_headers() -> None:
    async with running_origin() as origin:
        client = Client(origin.http, "/info")
        await client.open(subprotocols=["p1"], headers=[["X-Client", "42"]])
        (first,) = messages_of(await client.poll_events())
        info = json.loads(first.data)
        assert info["transport"] == "fallback" and info["websocket"] is True
        assert info["subprotocol"] == "p1" and info["offered_subprotocols"] == ["p1"]
        assert ["X-Client", "42"] in info["headers"]
        assert info["request_line"].startswith("POST /info/_tunnelws/1/open ")
        assert info["fallback"]["session"] == client.session
        plain = await http_request(origin.http, "GET", "/info")
        assert plain.json()["transport"] == "http"


async def test_replay_after_last_event_id_until_acknowledged() -> None:
    async with running_origin() as origin:
        client = Client(origin.http)
        await client.open()
        await client.up([text(1, "a"), text(2, "b")])
        first = [m.seq for m in messages_of(await client.poll_events(0))]
        again = [m.seq for m in messages_of(await client.poll_events(0))]
        assert first == again == [1, 2], "not acknowledged: sent again"
        assert [m.seq for m in messages_of(await client.poll_events(1))] == [2]
        stream = await read_stream(
            origin.http, client.path("down"), [("Last-Event-ID", "1")],
            until=lambda events: any(isinstance(e, FallbackMessage) for e in events),
        )
        assert stream.headers["content-type"] == "text/event-stream"
        assert stream.headers["cache-control"] == "no-cache, no-transform"
        assert stream.headers["x-accel-buffering"] == "no"
        kinds = [type(e).__name__ for _, e in stream.events]
        assert kinds[:3] == ["Heartbeat", "Ack", "FallbackMessage"], "heartbeat at once"
        assert [m.seq for m in messages_of([e for _, e in stream.events])] == [2]
        # A repeated sequence number is dropped, not echoed twice.
        assert (await client.up([text(2, "b")], ack=2)).json() == {"ack": 2}
        events = await client.poll_events(2)
        assert not messages_of(events) and Ack(2) in events and Heartbeat() in events


async def test_bad_requests_get_http_errors_and_the_session_survives() -> None:
    async with running_origin() as origin:
        client = Client(origin.http)
        await client.open()
        down, up = client.path("down"), client.path("up")
        cases = [
            ("POST", up, "garbage", 400),
            ("POST", up, '{"ack": 0, "messages": [{"seq": 0, "type": "text", "data": ""}]}', 400),
            ("POST", up, '{"messages": [{"seq": 1, "type": "binary", "data": "!"}]}', 400),
            ("POST", up, '{"ack": 9, "messages": []}', 400),
            ("POST", up, '{"ack": 0, "messages": [{"seq": 3, "type": "text", "data": "x"}]}', 409),
            ("GET", down + "?mode=poll&last=abc", "", 400),
            ("GET", down + "?mode=poll&last=5", "", 400),
            ("GET", up, "", 405),
            ("POST", down, "", 405),
            ("GET", "/echo/_tunnelws/1/no-such-session/down", "", 404),
            ("POST", "/echo/_tunnelws/1/no-such-session/up", "{}", 404),
            ("POST", "/echo/_tunnelws/2/open", "{}", 400),
            ("POST", "/echo/_tunnelws/1/open", '{"version": 2}', 400),
            ("POST", "/echo/_tunnelws/1/open", '{"headers": [["Host", "x"]]}', 400),
            ("POST", "/echo/_tunnelws/1/open", '{"subprotocols": ["a b"]}', 400),
            ("POST", "/nowhere/_tunnelws/1/open", "{}", 404),
        ]
        for method, target, body, status in cases:
            reply = await http_request(origin.http, method, target, body)
            assert reply.status == status, (method, target, body, reply)
            if status != 400 or "_tunnelws/2" not in target:
                assert "error" in reply.json()
        # A body cut short: the connection ends, the session does not.
        with trio.fail_after(5):
            stream = await trio.open_tcp_stream(*origin.http)
            await stream.send_all(
                f"POST {up} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{\"ack\"".encode()
            )
            await stream.aclose()
        await trio.sleep(0.1)
        assert (await client.up([text(1, "still here")])).json() == {"ack": 1}
        assert [m.data for m in messages_of(await client.poll_events())] == ["still here"]


async def test_a_second_upstream_post_in_flight_gets_409_and_big_bodies_413() -> None:
    async with running_origin() as origin:
        client = Client(origin.http)
        await client.open()
        body = json.dumps({"ack": 0, "messages": [text(1, "slow")]}).encode()
        with trio.fail_after(5):
            slow = await trio.open_tcp_stream(*origin.http)
            head = f"POST {client.path('up')} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}"
            await slow.send_all(head.encode() + b"\r\n\r\n" + body[:5])
            await trio.sleep(0.2)
            second = await client.up([text(1, "fast")])
            assert second.status == 409 and "in flight" in second.json()["error"]
            await slow.send_all(body[5:])
            answer = b""
            while not answer.endswith(b"}"):
                answer += await slow.receive_some(4096)
            assert answer.startswith(b"HTTP/1.1 200 ") and b'{"ack": 1}' in answer
            await slow.aclose()
        too_big = {"ack": 0, "messages": [text(2, "x" * (1024 * 1024 + 1))]}
        assert (await client.up(too_big["messages"])).status == 413
        assert (await client.up([text(2, "fits")])).json() == {"ack": 2}


async def test_streams_end_at_their_size_and_time_caps_and_heartbeat() -> None:
    limits = SessionLimits(max_stream_bytes=2000, max_stream_seconds=1.0, heartbeat=0.2)
    async with running_origin(fallback=FallbackConfig(limits=limits)) as origin:
        client = Client(origin.http)
        await client.open()
        started = trio.current_time()
        idle = await read_stream(origin.http, client.path("down"))
        assert idle.finished and isinstance(idle.events[-1][1], End)
        assert 0.9 <= trio.current_time() - started < 3
        beats = [at for at, e in idle.events if isinstance(e, Heartbeat)]
        assert len(beats) >= 4, "a heartbeat at least every 0.2 s"
        assert max(b - a for a, b in itertools.pairwise(beats)) < 0.5
        await client.up([text(i, "x" * 500) for i in range(1, 11)])
        full = await read_stream(origin.http, client.path("down"))
        sent = messages_of([e for _, e in full.events])
        assert full.finished and isinstance(full.events[-1][1], End)
        assert 2 <= len(sent) < 10, "the stream ended after about 2000 bytes"
        rest = await read_stream(origin.http, client.path("down"), [("Last-Event-ID", "3")])
        assert messages_of([e for _, e in rest.events])[0].seq == 4


async def test_a_new_downstream_request_finishes_the_older_one() -> None:
    async with running_origin() as origin:
        client = Client(origin.http)
        await client.open()
        async with trio.open_nursery() as nursery:
            older: list[object] = []

            async def first() -> None:
                older.append(await read_stream(origin.http, client.path("down")))

            nursery.start_soon(first)
            await trio.sleep(0.3)
            await client.up([text(1, "hello")])
            assert messages_of(await client.poll_events()) != []
        (stream,) = older
        assert stream.finished and isinstance(stream.events[-1][1], End)  # type: ignore[attr-defined]


async def test_cors_preflight_and_headers() -> None:
    async with running_origin() as origin:
        preflight = await http_request(
            origin.http, "OPTIONS", "/echo/_tunnelws/1/open",
            headers=[("Origin", "http://page.test"), ("Access-Control-Request-Method", "POST")],
        )
        assert preflight.status == 204
        assert preflight.headers["access-control-allow-origin"] == "http://page.test"
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert "last-event-id" in preflight.headers["access-control-allow-headers"].lower()
        opened = await http_request(
            origin.http, "POST", "/echo/_tunnelws/1/open", {"version": 1},
            headers=[("Origin", "http://page.test")],
        )
        assert opened.status == 201
        assert opened.headers["access-control-allow-credentials"] == "true"


async def test_the_shim_is_served() -> None:
    async with running_origin() as origin:
        reply = await http_request(origin.http, "GET", "/tunnelws.js")
        assert reply.status == 200 and reply.headers["content-type"].startswith("text/javascript")
        assert b"_tunnelws" in reply.body


def test_curl_drives_a_session(tmp_path: object) -> None:
    """curl as the client (a real, independent HTTP stack)."""
    curl = require_binary("curl")

    async def main() -> None:
        async with running_origin() as origin:
            base = origin.http_url("/echo/_tunnelws/1")

            def run(*args: str) -> str:
                done = subprocess.run([curl, "-sS", "--max-time", "10", *args],
                                      capture_output=True, text=True, check=True)
                return done.stdout

            opened = json.loads(await trio.to_thread.run_sync(
                lambda: run("-X", "POST", "-H", "Content-Type: application/json",
                            "--data", '{"version": 1}', f"{base}/open")))
            sid = opened["session"]
            up = '{"ack":0,"messages":[{"seq":1,"type":"text","data":"from curl"}]}'
            answer = await trio.to_thread.run_sync(lambda: run("--data", up, f"{base}/{sid}/up"))
            assert json.loads(answer) == {"ack": 1}
            body = await trio.to_thread.run_sync(lambda: run(f"{base}/{sid}/down?mode=poll"))
            assert [m.data for m in messages_of(decode_events(body.encode()))] == ["from curl"]

    trio.run(main)


# -- applications made for the test -------------------------------------------------


async def test_backpressure_towards_an_application_that_does_not_read() -> None:
    reading = trio.Event()
    received: list[object] = []

    async def slow_reader(socket: FallbackSocket, task_status: trio.TaskStatus[Accepted]) -> None:
        task_status.started(Accepted())
        await reading.wait()
        while not isinstance(message := await socket.receive(), Close):
            received.append(message)

    config = FallbackConfig(limits=SessionLimits(window=4))
    async with serving_app(slow_reader, config) as address:
        client = Client(address)
        await client.open()
        assert (await client.up([text(i, str(i)) for i in range(1, 11)])).json() == {"ack": 4}
        assert (await client.up([text(i, str(i)) for i in range(5, 11)])).json() == {"ack": 4}
        async with trio.open_nursery() as nursery:
            streamed: list[object] = []

            async def watch() -> None:
                streamed.append(await read_stream(
                    address, client.path("down"),
                    until=lambda events: Ack(4) in events[2:],
                ))

            nursery.start_soon(watch)
            await trio.sleep(0.2)
            reading.set()
        assert streamed, "an ack event says there is room again"
        ack = 4
        while ack < 10:
            ack = (await client.up([text(i, str(i)) for i in range(ack + 1, 11)])).json()["ack"]
            await trio.sleep(0.05)
        assert received == [str(i) for i in range(1, 11)]


async def test_the_downstream_window_holds_back_an_application_that_sends() -> None:
    sent: list[int] = []

    async def firehose(socket: FallbackSocket, task_status: trio.TaskStatus[Accepted]) -> None:
        task_status.started(Accepted(subprotocol="fire"))
        for i in range(1, 21):
            await socket.send(f"m{i}")
            sent.append(i)

    async with serving_app(firehose, FallbackConfig(limits=SessionLimits(window=5))) as address:
        client = Client(address)
        await client.open(subprotocols=["other"])
        assert client.opened["subprotocol"] == "fire"
        await trio.sleep(0.2)
        assert sent == [1, 2, 3, 4, 5], "blocked on the window"
        assert [m.seq for m in messages_of(await client.poll_events(0))] == [1, 2, 3, 4, 5]
        got = [m.seq for m in messages_of(await client.poll_events(5))]
        assert got[0] == 6 and len(got) <= 5


async def test_expired_sessions_end_with_1006_for_the_application() -> None:
    ended: list[Close] = []

    async def app(socket: FallbackSocket, task_status: trio.TaskStatus[Accepted]) -> None:
        task_status.started(Accepted())
        message = await socket.receive()
        assert isinstance(message, Close)
        ended.append(message)

    config = FallbackConfig(limits=SessionLimits(expires=0.3, heartbeat=0.2))
    async with serving_app(app, config) as address:
        client = Client(address)
        await client.open()
        await trio.sleep(1.0)
        assert ended == [Close(1006, "session expired", clean=False)]
        assert (await client.poll()).status == 404
        assert (await client.up([text(1, "late")])).status == 404


async def test_rejecting_and_failing_applications_and_the_session_cap() -> None:
    async def refuses(socket: FallbackSocket, task_status: trio.TaskStatus[Accepted]) -> None:
        raise Rejected("backend said no", backend_status=403)

    async with serving_app(refuses) as address:
        reply = await Client(address).open()
        assert reply.status == 502 and reply.json() == {"error": "backend said no", "status": 403}

    async def crashes(socket: FallbackSocket, task_status: trio.TaskStatus[Accepted]) -> None:
        task_status.started(Accepted())
        await socket.receive()
        raise RuntimeError("bug")

    async with serving_app(crashes, FallbackConfig(max_sessions=1)) as address:
        client = Client(address)
        await client.open()
        assert (await Client(address).open()).status == 503
        await client.up([text(1, "boom")])
        (close,) = messages_of(await client.poll_events())
        assert (close.kind, close.code) == ("close", 1011)
