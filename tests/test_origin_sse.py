"""/timestamp: the SSE stream on the wire (raw socket, so chunk boundaries and
arrival times are visible) and its pure parameter parsing and formatting."""

from __future__ import annotations

import itertools
from datetime import datetime, timezone

import pytest
import trio

from origin_support import (
    get_request,
    parse_event_block,
    raw_exchange,
    running_origin,
    sse_stream,
    status_of,
)
from tunnelws_testnet.origin._sse import (
    StreamParameterError,
    TimestampStream,
    format_event,
    parse_stream_request,
    utc_timestamp,
)


async def test_events_stream_one_by_one_with_retry_first() -> None:
    async with running_origin() as origin, sse_stream(
        origin.http, "/timestamp?interval=0.2&count=4&event=tick&heartbeat=0"
    ) as (head, reader):
        assert head.startswith(b"HTTP/1.1 200 ")
        lowered = head.lower()
        assert b"content-type: text/event-stream" in lowered
        assert b"cache-control: no-cache" in lowered
        assert b"transfer-encoding: chunked" in lowered
        with trio.fail_after(5):
            first = await reader.read_chunk()
            assert first.data == b"retry: 3000\n\n"
            events = [await reader.read_chunk() for _ in range(4)]
            assert (await reader.read_chunk()).data == b""  # the stream ends after count
    fields = [parse_event_block(chunk.data) for chunk in events]
    assert [f["id"] for f in fields] == ["1", "2", "3", "4"]
    assert all(f["event"] == "tick" for f in fields)
    stamps = [datetime.fromisoformat(f["data"].replace("Z", "+00:00")) for f in fields]
    assert all(stamp.tzinfo is not None for stamp in stamps)
    assert abs((stamps[0] - datetime.now(timezone.utc)).total_seconds()) < 10
    # Each event was flushed when produced: arrivals are ~0.2 s apart, not batched.
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(events)]
    assert all(0.12 < gap < 0.5 for gap in gaps), gaps


async def test_last_event_id_resumes_and_finished_stream_answers_204() -> None:
    async with running_origin() as origin:
        async with sse_stream(
            origin.http, "/timestamp?interval=0.01&count=5", "Last-Event-ID: 3"
        ) as (_head, reader):
            with trio.fail_after(5):
                preamble = (await reader.read_chunk()).data
                ids = [parse_event_block((await reader.read_chunk()).data)["id"] for _ in range(2)]
                assert (await reader.read_chunk()).data == b""
        assert preamble.startswith(b"retry: 3000\n\n")
        assert b": resuming after id 3" in preamble
        assert ids == ["4", "5"]
        done = await raw_exchange(
            origin.http, get_request("/timestamp?count=5", "Last-Event-ID: 5")
        )
        assert status_of(done) == 204


async def test_close_after_ends_the_response_early() -> None:
    async with running_origin() as origin:
        async with sse_stream(
            origin.http, "/timestamp?interval=0.01&count=10&close_after=2&retry=50"
        ) as (_head, reader):
            with trio.fail_after(5):
                assert (await reader.read_chunk()).data == b"retry: 50\n\n"
                ids = [parse_event_block((await reader.read_chunk()).data)["id"] for _ in range(2)]
                assert (await reader.read_chunk()).data == b""
        assert ids == ["1", "2"]


async def test_heartbeat_comments_while_waiting() -> None:
    async with running_origin() as origin, sse_stream(
        origin.http, "/timestamp?interval=5&heartbeat=0.05"
    ) as (_head, reader):
        with trio.fail_after(5):
            await reader.read_chunk()  # retry
            assert parse_event_block((await reader.read_chunk()).data)["id"] == "1"
            beat = await reader.read_chunk()
    assert beat.data.startswith(b": heartbeat ")


@pytest.mark.parametrize(
    "query",
    [
        "interval=0.001", "interval=abc", "interval=nan", "count=-1", "count=1.5", "retry=x",
        "event=",
    ],
)
async def test_bad_parameters_get_400(query: str) -> None:
    async with running_origin() as origin:
        response = await raw_exchange(origin.http, get_request(f"/timestamp?{query}"))
    assert status_of(response) == 400
    assert response.endswith(b"\n") and b"must" in response


def test_parse_defaults_and_resume() -> None:
    plan = parse_stream_request("", None)
    assert plan == TimestampStream()
    assert plan.last_id is None and not plan.finished
    resumed = parse_stream_request("count=3&interval=0.5", " 2 ")
    assert (resumed.first_id, resumed.last_id, resumed.interval) == (3, 3, 0.5)
    assert parse_stream_request("count=3", "3").finished
    assert parse_stream_request("", "not-a-number").first_id == 1
    assert parse_stream_request("close_after=2", "7").last_id == 9
    with pytest.raises(StreamParameterError, match="close_after"):
        parse_stream_request("close_after=0", None)
    with pytest.raises(StreamParameterError, match="event"):
        parse_stream_request("event=a%0Ab", None)


def test_format_event_and_timestamp() -> None:
    assert format_event(7, "x") == b"id: 7\ndata: x\n\n"
    assert format_event(1, "y", "tick") == b"id: 1\nevent: tick\ndata: y\n\n"
    moment = datetime(2025, 1, 31, 12, 0, 0, 250000, tzinfo=timezone.utc)
    assert utc_timestamp(moment) == "2025-01-31T12:00:00.250Z"
