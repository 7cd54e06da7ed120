"""A byte-level scripted fallback server, for the answers no real server
gives on demand (garbage, truncated bodies, replayed or missing sequence
numbers, a vanished session). The real one is the origin's
(``tunnelws_testnet.origin``); this one only plays scripts.

``open`` is answered with ``open_reply`` (default: a valid 201 for session
``s1`` with ``limits``); each ``down`` request gets the next raw reply of
``down`` (the last one repeats), written verbatim before the connection
closes; ``up`` is answered ``{"ack": N}`` with the highest ``seq`` it
carried (the server takes everything), and recorded.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

import h11
import trio

from tunnelws._fallback_wire import FallbackMessage, SessionLimits, encode_message_event

__all__ = ["ScriptedFallback", "event", "http_reply", "open_answer", "sse_reply"]

LIMITS = SessionLimits(heartbeat=0.5, expires=2.0, poll_timeout=0.5)


def open_answer(**fields: Any) -> dict[str, Any]:
    """A valid open answer (session ``s1``, :data:`LIMITS`), ``fields`` replaced."""
    answer = {
        "version": 1,
        "session": "s1",
        "subprotocol": None,
        "extensions": [],
        "limits": LIMITS.to_json(),
    }
    return {**answer, **fields}


def http_reply(status: int, body: bytes, content_type: str = "application/json") -> bytes:
    head = f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\n"
    head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return head.encode() + body


def sse_reply(*events: bytes, truncate: int | None = None) -> bytes:
    """A 200 event stream (unframed: it ends when the connection closes),
    or with ``truncate``, one whose connection closes after that many bytes
    of its announced body."""
    body = b"".join(events)
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n"
    if truncate is None:
        return head + b"\r\n" + body
    # Framed, so that the cut shows: the connection closes before the end.
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body[:truncate]


def event(seq: int, kind: str = "text", data: str | bytes = "", code: int | None = None) -> bytes:
    return encode_message_event(FallbackMessage(seq, kind, data, code))  # type: ignore[arg-type]


@dataclass
class ScriptedFallback:
    down: list[bytes]
    open_reply: bytes = b""
    port: int = 0
    up_bodies: list[dict[str, Any]] = field(default_factory=list)
    down_headers: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.open_reply:
            self.open_reply = http_reply(201, json.dumps(open_answer()).encode())

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/echo"

    async def serve(
        self, *, task_status: trio.TaskStatus[ScriptedFallback] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            with contextlib.suppress(trio.BrokenResourceError, h11.ProtocolError):
                await self._answer(stream)

    async def _answer(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event_ = conn.next_event()
            if event_ is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return
                conn.receive_data(data)
            elif isinstance(event_, h11.Request):
                request = event_
            elif isinstance(event_, h11.Data):
                body += event_.data
            elif isinstance(event_, h11.EndOfMessage):
                break
        assert request is not None
        target = request.target.decode()
        if target.endswith("/open"):
            reply = self.open_reply
        elif target.split("?")[0].endswith("/down"):
            self.down_headers.append(
                {k.decode().lower(): v.decode() for k, v in request.headers.raw_items()}
            )
            reply = self.down.pop(0) if len(self.down) > 1 else self.down[0]
        else:
            batch = json.loads(body)
            self.up_bodies.append(batch)
            seqs = [m["seq"] for m in batch["messages"]]
            reply = http_reply(200, json.dumps({"ack": max(seqs, default=0)}).encode())
        await stream.send_all(reply)
