"""A byte-level scripted proxy, for the misbehaviours no real proxy produces on
demand (garbage replies, dribbled bytes, silence, piggybacked tunnel bytes).

Each incoming CONNECT request consumes the next :class:`Step` of the script
(the last step repeats). Everything received is recorded so tests can assert
what the client sent, e.g. that credentials or the number of CONNECTs are
right.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import trio
import trio.lowlevel

Then = Literal["tunnel", "close", "silent", "next"]


@dataclass
class Step:
    reply: bytes = b"HTTP/1.1 200 Connection established\r\n\r\n"
    # After the reply: relay to the requested target, close, stay silent, or
    # read another request on the same connection.
    then: Then = "tunnel"
    dribble: bool = False
    # Bytes sent after the reply in the same write, as if from the origin.
    piggyback: bytes = b""
    # Kill the tunnel when no byte has crossed it for this many seconds.
    idle_timeout: float | None = None


@dataclass
class ScriptedProxy:
    steps: list[Step]
    # Names only the proxy can resolve (the client has no DNS for them).
    aliases: dict[str, str] = field(default_factory=dict)
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    # Bytes relayed through tunnels: client to target, target to client.
    relayed: dict[str, int] = field(default_factory=lambda: {"up": 0, "down": 0})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def next_step(self) -> Step:
        return self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]

    async def serve(
        self, *, task_status: trio.TaskStatus[ScriptedProxy] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        async with stream:
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                self.requests.append(head + b"\r\n\r\n")
                step = self.next_step()
                if step.dribble:
                    for i in range(len(step.reply)):
                        await stream.send_all(step.reply[i : i + 1])
                        await trio.lowlevel.checkpoint()
                    if step.piggyback:
                        await stream.send_all(step.piggyback)
                elif step.reply or step.piggyback:
                    await stream.send_all(step.reply + step.piggyback)
                if step.then == "next":
                    continue
                if step.then == "silent":
                    await trio.sleep_forever()
                if step.then == "tunnel":
                    await _relay_to_target(
                        stream, head, buffer, self.aliases, step.idle_timeout, self.relayed
                    )
                return


async def _relay_to_target(
    client: trio.SocketStream,
    head: bytes,
    early: bytes,
    aliases: dict[str, str],
    idle_timeout: float | None,
    relayed: dict[str, int],
) -> None:
    authority = head.split(b" ", 2)[1].decode()
    host, _, port = authority.rpartition(":")
    host = host.strip("[]")
    upstream = await trio.open_tcp_stream(aliases.get(host, host), int(port))
    async with upstream:
        if early:
            await upstream.send_all(early)

        # An idle timeout is a deadline pushed back by every byte relayed.
        idle = trio.CancelScope()

        def touch() -> None:
            if idle_timeout is not None:
                idle.deadline = trio.current_time() + idle_timeout

        async def pump(source: trio.abc.Stream, sink: trio.abc.Stream, direction: str) -> None:
            try:
                while data := await source.receive_some(65536):
                    touch()
                    relayed[direction] += len(data)
                    await sink.send_all(data)
                await sink.send_eof()  # type: ignore[attr-defined]
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        touch()
        with idle:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump, client, upstream, "up")
                nursery.start_soon(pump, upstream, client, "down")
