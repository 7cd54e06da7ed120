"""A tiny scripted HTTP server for the event stream client's tests.

Each accepted connection reads one request (recorded in ``requests``) and
plays the next :class:`Reply` of the script, byte for byte: the response head
as written, body pieces with pauses in between, an optional chunked framing,
and either a close or a hold. That gives the tests exact control over where a
connection drops, which the real origin server deliberately does not offer.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import h11
import trio

REQUEST_TIMEOUT = 10.0


@dataclass(frozen=True)
class Reply:
    """What the server does with one connection.

    ``body`` holds bytes to send (each in its own write, and its own chunk
    when ``chunked``) and floats, which are pauses in seconds. ``hold`` keeps
    the connection open after the body until the client closes it. ``raw``
    replaces the whole response with these bytes (for malformed replies);
    ``silent`` sends nothing at all and holds.
    """

    status: int = 200
    reason: str = "OK"
    content_type: str | None = "text/event-stream"
    headers: Sequence[tuple[str, str]] = ()
    body: Sequence[bytes | float] = ()
    chunked: bool = False
    hold: bool = False
    raw: bytes | None = None
    silent: bool = False


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    target: str
    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (case-insensitive), ``None`` if absent."""
        values = [v for k, v in self.headers if k == name.lower()]
        assert len(values) <= 1, f"{name} sent {len(values)} times"
        return values[0] if values else None


# Sent when the script has run out, so a test that reconnects more often than
# it planned fails loudly instead of hanging.
EXHAUSTED = Reply(status=500, reason="Script Exhausted", content_type="text/plain",
                  body=[b"no more scripted replies"])  # fmt: skip


@dataclass
class ScriptedSSEServer:
    replies: deque[Reply]
    requests: list[ReceivedRequest] = field(default_factory=list)
    #: Set each time a client closes its side of a connection.
    client_closed: trio.Event = field(default_factory=trio.Event)

    @classmethod
    def script(cls, *replies: Reply) -> ScriptedSSEServer:
        return cls(deque(replies))

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve on 127.0.0.1, port chosen by the OS; ``started(port)``."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.abc.Stream) -> None:
        async with stream:
            with trio.move_on_after(REQUEST_TIMEOUT):
                request = await _read_request(stream)
            if request is None:
                return
            self.requests.append(request)
            reply = self.replies.popleft() if self.replies else EXHAUSTED
            try:
                await _play(stream, reply)
                if reply.hold or reply.silent:
                    await _wait_for_close(stream)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            self.client_closed.set()
            self.client_closed = trio.Event()


async def _read_request(stream: trio.abc.Stream) -> ReceivedRequest | None:
    http = h11.Connection(our_role=h11.SERVER)
    while True:
        event = http.next_event()
        if event is h11.NEED_DATA:
            data = bytes(await stream.receive_some(65536))
            if not data:
                return None
            http.receive_data(data)
        elif isinstance(event, h11.Request):
            return ReceivedRequest(
                event.method.decode(),
                event.target.decode(),
                [(k.decode(), v.decode("utf-8")) for k, v in event.headers],
            )
        else:
            return None


async def _play(stream: trio.abc.Stream, reply: Reply) -> None:
    if reply.silent:
        return
    if reply.raw is not None:
        await stream.send_all(reply.raw)
        return
    head = [f"HTTP/1.1 {reply.status} {reply.reason}"]
    if reply.content_type is not None:
        head.append(f"Content-Type: {reply.content_type}")
    head += [f"{name}: {value}" for name, value in reply.headers]
    if reply.chunked:
        head.append("Transfer-Encoding: chunked")
    head.append("Connection: close")
    await stream.send_all(("\r\n".join(head) + "\r\n\r\n").encode())
    for piece in reply.body:
        if isinstance(piece, float):
            await trio.sleep(piece)
        elif reply.chunked:
            await stream.send_all(b"%x\r\n%s\r\n" % (len(piece), piece))
        else:
            await stream.send_all(piece)
    if reply.chunked and not reply.hold:
        await stream.send_all(b"0\r\n\r\n")


async def _wait_for_close(stream: trio.abc.Stream) -> None:
    while await stream.receive_some(65536):
        pass
