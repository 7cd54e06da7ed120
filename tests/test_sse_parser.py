"""The pure event-stream parser against the WHATWG rules.

Every table case is also fed split at every byte position and byte by byte:
the events, the last event ID and the retry value must not depend on how the
bytes were chunked. A hypothesis property checks the same for generated
streams, and compares the parser with a whole-buffer model of the standard.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunnelws._sse import (
    DEFAULT_MAX_EVENT_SIZE,
    EventStreamParser,
    EventTooLargeError,
    ServerSentEvent,
)

E = ServerSentEvent


@dataclass(frozen=True)
class Case:
    name: str
    stream: bytes
    events: Sequence[ServerSentEvent]
    last_event_id: str = ""
    retry: int | None = None


CASES = [
    # Line endings
    Case("lf", b"data: hello\n\n", [E(data="hello")]),
    Case("crlf", b"data: a\r\n\r\n", [E(data="a")]),
    Case("cr", b"data: a\r\rdata: b\r\r", [E(data="a"), E(data="b")]),
    Case("mixed endings", b"data: a\r\ndata: b\rdata: c\n\n", [E(data="a\nb\nc")]),
    Case("crlf is one line end", b"data: a\r\n\r\ndata: b\r\n\r\n", [E(data="a"), E(data="b")]),
    Case("lf cr is two line ends", b"data: a\n\rdata: b\n\n", [E(data="a"), E(data="b")]),
    Case("u+2028 is text", "data: a\u2028b\n\n".encode(), [E(data="a\u2028b")]),
    Case(
        "other unicode separators are text",
        "data: a\u2029b\x85c\x0bd\x0ce\x1cf\n\n".encode(),
        [E(data="a\u2029b\x85c\x0bd\x0ce\x1cf")],
    ),
    # Byte order mark and decoding
    Case("bom stripped", b"\xef\xbb\xbfdata: x\n\n", [E(data="x")]),
    Case("only one bom stripped", b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\n", []),
    Case("bom later is text", b"data: a\n\n\xef\xbb\xbfdata: b\n\n", [E(data="a")]),
    Case("bom in data kept", b"data: \xef\xbb\xbfx\n\n", [E(data="\ufeffx")]),
    Case("multibyte", "data: €😀ü\n\n".encode(), [E(data="€😀ü")]),
    Case("invalid utf-8 replaced", b"data: a\xffb\n\n", [E(data="a\ufffdb")]),
    Case("truncated sequence replaced", b"data: \xe2\x82\n\n", [E(data="\ufffd")]),
    Case("nul in data kept", b"data: a\x00b\n\n", [E(data="a\x00b")]),
    # Fields
    Case("field without colon", b"data\n\n", [E(data="")]),
    Case("two empty data lines", b"data\ndata\n\n", [E(data="\n")]),
    Case("comment", b": keep-alive\ndata: x\n\n", [E(data="x")]),
    Case("comment only block", b":\n\n: x\r\n\r\n", []),
    Case("one space stripped", b"data:  two\n\n", [E(data=" two")]),
    Case("no space", b"data:x\n\n", [E(data="x")]),
    Case("tab not stripped", b"data:\tx\n\n", [E(data="\tx")]),
    Case("colon in value", b"data: a: b\n\n", [E(data="a: b")]),
    Case("trailing space kept", b"data: a \n\n", [E(data="a ")]),
    Case("data lines joined", b"data: a\ndata: b\n\n", [E(data="a\nb")]),
    Case("empty last data line", b"data: a\ndata:\n\n", [E(data="a\n")]),
    Case("unknown field ignored", b"foo: bar\ndata: x\n\n", [E(data="x")]),
    Case("names are case-sensitive", b"Data: x\nEVENT: y\n\n", []),
    Case("space before colon", b"data : x\n\n", []),
    # Event type
    Case("event type", b"event: add\ndata: 1\n\n", [E(type="add", data="1")]),
    Case(
        "event type resets after dispatch",
        b"event: a\ndata: 1\n\ndata: 2\n\n",
        [E(type="a", data="1"), E(data="2")],
    ),
    Case(
        "event type resets after undispatched event",
        b"event: a\n\ndata: 2\n\n",
        [E(data="2")],
    ),
    Case("empty event type is message", b"event:\ndata: 1\n\n", [E(data="1")]),
    Case("last event field wins", b"event: a\nevent: b\ndata: 1\n\n", [E(type="b", data="1")]),
    # IDs
    Case("id", b"id: 7\ndata: x\n\n", [E(data="x", id="7")], last_event_id="7"),
    Case(
        "id persists",
        b"id: 1\ndata: a\n\ndata: b\n\n",
        [E(data="a", id="1"), E(data="b", id="1")],
        last_event_id="1",
    ),
    Case(
        "empty id resets",
        b"id: 1\ndata: a\n\nid\ndata: b\n\n",
        [E(data="a", id="1"), E(data="b", id="")],
    ),
    Case(
        "id with nul ignored",
        b"id: 1\ndata: a\n\nid: 2\x00\ndata: b\n\n",
        [E(data="a", id="1"), E(data="b", id="1")],
        last_event_id="1",
    ),
    Case("id without data still counts", b"id: 5\n\n", [], last_event_id="5"),
    Case(
        "id of undispatched event carries on",
        b"event: foo\nid: 6\n\ndata: x\n\n",
        [E(data="x", id="6")],
        last_event_id="6",
    ),
    Case("id set after data in same block", b"data: x\nid: 9\n\n", [E(data="x", id="9")], "9"),
    Case("unicode id", "id: é€\ndata: x\n\n".encode(), [E(data="x", id="é€")], "é€"),
    # Retry
    Case("retry", b"retry: 1500\n", [], retry=1500),
    Case("retry leading zeros", b"retry: 007\n", [], retry=7),
    Case("retry zero", b"retry: 0\n", [], retry=0),
    Case("retry last valid wins", b"retry: 10\nretry: x\nretry: 20\n", [], retry=20),
    Case("retry with letter ignored", b"retry: 15a\n", []),
    Case("retry negative ignored", b"retry: -1\n", []),
    Case("retry two spaces ignored", b"retry:  1\n", []),
    Case("retry empty ignored", b"retry:\nretry\n", []),
    Case("retry decimal ignored", b"retry: 1.5\n", []),
    Case("retry non-ascii digits ignored", "retry: ١٢\nretry: ²\n".encode(), []),
    Case("retry huge saturates", b"retry: " + b"9" * 5000 + b"\n", [], retry=10**12 - 1),
    Case("retry does not dispatch", b"retry: 5\n\n", [], retry=5),
    # End of stream
    Case("unterminated line discarded", b"data: x", []),
    Case("unterminated event discarded", b"data: x\n", []),
    Case("complete events kept at eof", b"data: x\n\ndata: y\n", [E(data="x")]),
    Case("uncommitted id discarded", b"id: 9\n", []),
    Case("cr at end is a line end", b"data: x\r\r", [E(data="x")]),
    Case("empty stream", b"", []),
    Case("blank lines only", b"\n\r\n\r\n\n", []),
]


def parse(chunks: Iterable[bytes], **kwargs: object) -> tuple[list[E], str, int | None]:
    parser = EventStreamParser(**kwargs)  # type: ignore[arg-type]
    events: list[E] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    events += parser.feed_eof()
    return events, parser.last_event_id, parser.retry


def splits(stream: bytes) -> Iterable[list[bytes]]:
    yield [stream]
    for cut in range(len(stream) + 1):
        yield [stream[:cut], stream[cut:]]
    yield [stream[i : i + 1] for i in range(len(stream))]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_under_every_split(case: Case) -> None:
    expected = (list(case.events), case.last_event_id, case.retry)
    for chunks in splits(case.stream):
        assert parse(chunks) == expected, chunks


def test_case_names_unique() -> None:
    assert len({c.name for c in CASES}) == len(CASES)


def test_event_defaults() -> None:
    assert E() == E(type="message", data="", id="")


def test_events_returned_as_soon_as_complete() -> None:
    parser = EventStreamParser()
    assert parser.feed(b"data: a\n") == []
    assert parser.feed(b"\n") == [E(data="a")]
    # A CR completes the line immediately; the LF that may follow is not a
    # second line end.
    assert parser.feed(b"data: b\r\r") == [E(data="b")]
    assert parser.feed(b"\ndata: c\n\n") == [E(data="c")]


def test_cr_survives_incomplete_utf8_feed() -> None:
    # The feed after the CR decodes to nothing (half a character); the LF
    # after it still belongs to the CRLF.
    parser = EventStreamParser()
    assert parser.feed(b"data: \xc3") == []
    assert parser.feed(b"\xa9\r") == []
    assert parser.feed(b"") == []
    assert parser.feed(b"\n\r\n") == [E(data="é")]


def test_seeded_last_event_id() -> None:
    events, last_id, _ = parse([b"data: a\n\nid: 2\ndata: b\n\n"], last_event_id="41")
    assert events == [E(data="a", id="41"), E(data="b", id="2")]
    assert last_id == "2"


def test_feed_eof_starts_next_stream_keeping_id_and_retry() -> None:
    parser = EventStreamParser()
    assert parser.feed(b"retry: 250\nid: 3\ndata: a\n\nid: 4\ndata: lost") == [E(data="a", id="3")]
    assert parser.feed_eof() == []
    assert (parser.last_event_id, parser.retry) == ("3", 250)
    # A new body: BOM check rearmed, no leftovers from the discarded event,
    # the resumed ID carries on.
    assert parser.feed(b"\xef\xbb\xbfdata: b\n\n") == [E(data="b", id="3")]


def test_feed_eof_forgets_pending_cr() -> None:
    parser = EventStreamParser()
    parser.feed(b"data: a\r")
    parser.feed_eof()
    # The LF opening the next body is a line end of its own, ending an
    # (empty) line: a blank line without data dispatches nothing.
    assert parser.feed(b"\ndata: b\n\n") == [E(data="b")]


def test_line_too_large() -> None:
    parser = EventStreamParser(max_event_size=100)
    parser.feed(b"data: " + b"x" * 90)
    with pytest.raises(EventTooLargeError) as info:
        parser.feed(b"x" * 10)
    assert info.value.limit == 100
    assert "100" in str(info.value)


def test_comment_line_too_large() -> None:
    parser = EventStreamParser(max_event_size=64)
    with pytest.raises(EventTooLargeError):
        for _ in range(10):
            parser.feed(b": " + b"k" * 10)


def test_event_too_large_over_many_lines() -> None:
    parser = EventStreamParser(max_event_size=100)
    with pytest.raises(EventTooLargeError):
        for _ in range(20):
            parser.feed(b"data: 123456789\n")


def test_limit_is_per_event() -> None:
    # Many events, each well under the limit, never trip it: dispatch frees.
    parser = EventStreamParser(max_event_size=100)
    events = []
    for i in range(200):
        events += parser.feed(b"data: 12345678901234567890\n: comment comment comment\n\n")
        assert len(events) == i + 1


def test_event_at_the_limit_passes() -> None:
    parser = EventStreamParser(max_event_size=20)
    # "data:" + 14 chars = 19 chars pending, then 14 + LF = 15 in the buffer.
    assert parser.feed(b"data:" + b"y" * 14 + b"\n\n") == [E(data="y" * 14)]


def test_default_limit_is_generous() -> None:
    assert DEFAULT_MAX_EVENT_SIZE >= 1024 * 1024
    parser = EventStreamParser()
    big = b"z" * (1024 * 1024)
    assert parser.feed(b"data: " + big + b"\n\n") == [E(data=big.decode())]


def test_invalid_limit() -> None:
    with pytest.raises(ValueError):
        EventStreamParser(max_event_size=0)


# -- Property: chunking never matters, and the parser matches a model ---------


def reference_parse(stream: bytes) -> tuple[list[E], str, int | None]:
    """The standard's algorithm over the whole body at once (no chunking)."""
    text = stream.decode("utf-8", errors="replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    # The last piece is an unterminated line: discarded at end of stream.
    lines = re.split(r"\r\n|\r|\n", text)[:-1]
    events: list[E] = []
    data, event_type, id_buffer, last_id = "", "", "", ""
    retry: int | None = None
    for line in lines:
        if line == "":
            last_id = id_buffer
            if data:
                events.append(E(type=event_type or "message", data=data[:-1], id=last_id))
            data, event_type = "", ""
            continue
        if line[0] == ":":
            continue
        if ":" in line:
            name, value = line.split(":", 1)
            value = value[1:] if value[:1] == " " else value
        else:
            name, value = line, ""
        if name == "data":
            data += value + "\n"
        elif name == "event":
            event_type = value
        elif name == "id" and "\x00" not in value:
            id_buffer = value
        elif name == "retry" and re.fullmatch(r"[0-9]+", value):
            retry = int(value)
    return events, last_id, retry


PIECES = [
    "data", "data:", "data: ", "event:", "event: x", "id:", "id: 1", "id: 2", "retry: ",
    "retry: 30", ":", " ", "a", "7", "\x00", "\r", "\n", "\r\n", "\u2028", "é", "😀",
    "\ufeff",
]  # fmt: skip
PIECE_BYTES = [p.encode() for p in PIECES] + [b"\xff", b"\xe2\x82", b"\xf0\x9f"]

streams = st.lists(st.sampled_from(PIECE_BYTES), max_size=60).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(stream=streams, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_chunking_is_invariant(stream: bytes, cuts: list[int]) -> None:
    positions = sorted({min(c, len(stream)) for c in cuts})
    bounds = [0, *positions, len(stream)]
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    assert parse(chunks) == parse([stream])
    assert parse([stream[i : i + 1] for i in range(len(stream))]) == parse([stream])


@settings(max_examples=300, deadline=None)
@given(stream=streams)
def test_matches_whole_buffer_model(stream: bytes) -> None:
    assert parse([stream]) == reference_parse(stream)
