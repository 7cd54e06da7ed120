"""The server end of the HTTP fallback: sessions, and the ``open``,
``down`` and ``up`` endpoints of ``docs/fallback-protocol.md``.

The engine is independent of what a session carries: whoever routes a
fallback request passes an *application* for ``open`` (the origin's echo, a
gateway's backend WebSocket). An application is an async function::

    async def app(socket: FallbackSocket, task_status: trio.TaskStatus[Accepted]) -> None:
        task_status.started(Accepted(subprotocol=...))   # or raise Rejected(502, ...)
        while not isinstance(message := await socket.receive(), Close):
            await socket.send(message)
        await socket.close(message.code, message.reason)

It runs in the engine's nursery for the session's lifetime. The engine also
does not own the HTTP connection: it answers on any object with the methods
of :class:`HTTPExchange` (the origin's ``HTTPConnection``).
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol
from urllib.parse import parse_qs

import h11
import trio

from tunnelws.fallback import (
    FALLBACK_VERSION,
    FallbackMessage,
    FallbackPath,
    FallbackProtocolError,
    SessionLimits,
    decode_upstream,
    encode_ack_event,
    encode_end_event,
    encode_heartbeat,
    encode_message_event,
    parse_fallback_path,
)

from ._session import FallbackSocket, OpenRequest, Session
from ._state import SequenceGap, SessionState

__all__ = [
    "Accepted",
    "Application",
    "FallbackConfig",
    "FallbackServer",
    "HTTPExchange",
    "Rejected",
    "run_fallback_server",
]

logger = logging.getLogger("tunnelws_testnet.fallback")

MAX_OPEN_BODY = 64 * 1024
STREAM_HEADERS = (
    ("Content-Type", "text/event-stream"),
    ("Cache-Control", "no-cache, no-transform"),
    ("X-Accel-Buffering", "no"),
)
# Headers a client may not set through the open request's "headers": they
# belong to the handshake itself or to the hop.
RESERVED_HEADERS = frozenset(
    {
        "host",
        "upgrade",
        "connection",
        "content-length",
        "transfer-encoding",
        "te",
        "trailer",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
        "sec-websocket-accept",
    }
)
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


class HTTPExchange(Protocol):
    """What the engine needs of an HTTP/1.1 server connection."""

    async def send(self, *events: h11.Event) -> None: ...
    async def send_body(
        self,
        status: int,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        *,
        content_type: str,
        head_only: bool = False,
    ) -> None: ...
    async def send_error(
        self, status: int, message: str, headers: Iterable[tuple[str, str]] = ()
    ) -> None: ...
    async def read_body(self, limit: int) -> bytes: ...
    async def discard_body(self) -> None: ...
    async def run_until_disconnect(self, producer: Callable[[], Awaitable[None]]) -> None: ...


@dataclass(frozen=True)
class Accepted:
    """An application took the session (``subprotocol``: the one it chose)."""

    subprotocol: str | None = None


class Rejected(Exception):
    """An application refuses the session before it started: the client
    gets ``status`` (502 for a backend that refused) and ``message``."""

    def __init__(self, message: str, *, status: int = 502, backend_status: int | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.backend_status = backend_status


Application = Callable[[FallbackSocket, "trio.TaskStatus[Accepted]"], Awaitable[None]]


@dataclass(frozen=True)
class FallbackConfig:
    """How the engine runs sessions.

    ``limits`` are announced to clients; ``buffer_bytes`` bounds each
    direction's buffer per session (besides ``limits.window`` messages);
    ``max_sessions`` bounds them all (503 beyond); ``open_timeout`` bounds an
    application's start (a gateway's backend handshake); ``app_grace`` is how
    long an application may run on after its session was forgotten.
    ``route`` (letters and digits) starts every session id, ``ROUTE-…``, so
    that a load balancer can send a session's requests to this server.
    """

    limits: SessionLimits = field(default_factory=SessionLimits)
    buffer_bytes: int = 1024 * 1024
    max_sessions: int = 1000
    open_timeout: float = 10.0
    app_grace: float = 5.0
    route: str | None = None

    def __post_init__(self) -> None:
        if self.buffer_bytes < 1 or self.max_sessions < 1:
            raise ValueError("buffer_bytes and max_sessions must be positive")
        if self.route is not None and not (
            0 < len(self.route) <= 20 and self.route.isascii() and self.route.isalnum()
        ):
            raise ValueError("route must be 1-20 ASCII letters and digits")

    def new_session_id(self) -> str:
        """An unguessable id (160 random bits), after the route label if any."""
        random_part = secrets.token_hex(20)
        return random_part if self.route is None else f"{self.route}-{random_part}"


class _HTTPError(Exception):
    """Answer the request with ``status`` and a JSON error body."""

    def __init__(self, http_status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = http_status
        self.body = {"error": message, **extra}


class FallbackServer:
    """The sessions of one server process and the endpoints that drive them.

    Get one from ``await nursery.start(run_fallback_server, config)``; route
    every request whose path :func:`~tunnelws.fallback.parse_fallback_path`
    recognises to :meth:`handle`.
    """

    def __init__(self, config: FallbackConfig, nursery: trio.Nursery) -> None:
        self.config = config
        self.limits = config.limits
        self._nursery = nursery
        self.sessions: dict[str, Session] = {}

    # -- routing ---------------------------------------------------------------

    async def route(
        self,
        http: HTTPExchange,
        request: h11.Request,
        app_for: Callable[[FallbackPath], Application | None],
    ) -> bool | None:
        """Answer ``request`` if it is a fallback request (None if it is not):
        a server's router calls this first. ``app_for(path)`` gives the
        application for a new session on ``path.resource`` (or None)."""
        try:
            path = parse_fallback_path(request.target.decode("ascii", errors="replace"))
        except FallbackProtocolError as exc:
            await http.discard_body()
            await http.send_error(400, str(exc))
            return False
        if path is None:
            return None
        return await self.handle(http, request, path, app_for(path))

    async def handle(
        self,
        http: HTTPExchange,
        request: h11.Request,
        path: FallbackPath,
        app: Application | None,
    ) -> bool:
        """Answer one fallback request; False when the connection must close.

        ``app`` serves new sessions on ``path.resource`` (None: this resource
        has no fallback, ``open`` gets 404).
        """
        cors = _cors_headers(request)
        try:
            if request.method == b"OPTIONS":
                await http.discard_body()
                await _preflight(http, cors)
                return True
            if path.endpoint == "open":
                return await self._open(http, request, path, app, cors)
            session = self.sessions.get(path.session or "")
            if path.endpoint == "down":
                _require(request, b"GET")
                await http.discard_body()
                if session is None or session.state.ended is not None:
                    raise _HTTPError(404, "unknown session")
                return await self._down(http, request, session, cors)
            _require(request, b"POST")
            if session is None or session.state.ended is not None:
                await http.discard_body()
                raise _HTTPError(404, "unknown session")
            return await self._up(http, session, cors)
        except _HTTPError as exc:
            body = json.dumps(exc.body).encode()
            await http.send_body(exc.status, cors, body, content_type="application/json")
            return True

    # -- open ------------------------------------------------------------------

    async def _open(
        self,
        http: HTTPExchange,
        request: h11.Request,
        path: FallbackPath,
        app: Application | None,
        cors: list[tuple[str, str]],
    ) -> bool:
        _require(request, b"POST")
        body = await http.read_body(MAX_OPEN_BODY)
        if app is None:
            raise _HTTPError(404, f"no WebSocket endpoint at {path.resource}")
        subprotocols, headers = _parse_open(body)
        if len(self.sessions) >= self.config.max_sessions:
            raise _HTTPError(503, "too many sessions")
        now = trio.current_time()
        session_id = self.config.new_session_id()
        state = SessionState(session_id, self.limits, self.config.buffer_bytes, now)
        session = Session(state, OpenRequest(path.resource, subprotocols, headers, request))
        try:
            with trio.fail_after(self.config.open_timeout):
                accepted: Accepted = await self._nursery.start(self._run_app, app, session)
        except Rejected as exc:
            extra = {} if exc.backend_status is None else {"status": exc.backend_status}
            raise _HTTPError(exc.status, exc.message, **extra) from None
        except trio.TooSlowError:
            raise _HTTPError(504, "the application did not accept the session in time") from None
        except Exception as exc:
            logger.warning("fallback application failed to open: %r", exc)
            raise _HTTPError(502, f"the application failed: {type(exc).__name__}") from None
        session.subprotocol = accepted.subprotocol
        self.sessions[session_id] = session
        state.last_activity = trio.current_time()
        answer = {
            "version": FALLBACK_VERSION,
            "session": session_id,
            "subprotocol": accepted.subprotocol,
            "extensions": [],
            "limits": self.limits.to_json(),
        }
        await http.send_body(
            201, cors, json.dumps(answer).encode(), content_type="application/json"
        )
        return True

    async def _run_app(
        self, app: Application, session: Session, *, task_status: trio.TaskStatus[Accepted]
    ) -> None:
        status = _TrackedStatus(task_status)
        try:
            with session.app_scope:
                await app(FallbackSocket(session), status)
        except Exception as exc:
            if not status.started_yet:
                raise
            # An application bug ends its session, never the server.
            logger.warning("fallback application error in session: %r", exc)
            session.state.push_close(1011, "internal error", trio.current_time())
        finally:
            if status.started_yet:
                session.state.push_close(1011, "the application ended", trio.current_time())
                session.fire()

    # -- down ------------------------------------------------------------------

    async def _down(
        self,
        http: HTTPExchange,
        request: h11.Request,
        session: Session,
        cors: list[tuple[str, str]],
    ) -> bool:
        state = session.state
        query = parse_qs(request.target.decode("ascii", "replace").partition("?")[2])
        last = _last_event_id(request, query)
        try:
            state.ack_down(last, trio.current_time())
        except FallbackProtocolError as exc:
            raise _HTTPError(400, str(exc)) from None
        state.down_generation += 1
        generation = state.down_generation
        state.open_requests += 1
        session.fire()  # wakes a writer blocked on the window, ends an older request
        try:
            if query.get("mode", [""])[-1] == "poll":
                await self._poll(http, session, last, generation, cors)
                return True
            await self._stream(http, session, last, generation, cors)
            return False
        finally:
            state.open_requests -= 1
            state.last_activity = trio.current_time()

    async def _poll(
        self,
        http: HTTPExchange,
        session: Session,
        last: int,
        generation: int,
        cors: list[tuple[str, str]],
    ) -> None:
        state = session.state
        with trio.move_on_after(self.limits.poll_timeout):
            while (
                not state.pending_after(last)
                and state.down_generation == generation
                and state.ended is None
            ):
                await session.changed()
        body = self._ack_event(state)
        messages = _bounded(state.pending_after(last), self.limits.max_stream_bytes)
        body += b"".join(encode_message_event(m) for m in messages) or encode_heartbeat()
        await http.send_body(200, cors, body, content_type="text/event-stream")

    async def _stream(
        self,
        http: HTTPExchange,
        session: Session,
        last: int,
        generation: int,
        cors: list[tuple[str, str]],
    ) -> None:
        state = session.state
        limits = self.limits
        headers = [*STREAM_HEADERS, *cors, ("Connection", "close")]
        head: list[h11.Event] = [_response(200, headers)]  # goes with the first chunk

        async def produce() -> None:
            nonlocal head
            deadline = trio.current_time() + limits.max_stream_seconds
            sent_bytes = 0
            position = last
            acked_up = state.up.received
            last_write = trio.current_time()
            chunk = encode_heartbeat() + self._ack_event(state)
            while True:
                messages = _bounded(
                    state.pending_after(position), limits.max_stream_bytes - sent_bytes
                )
                chunk += b"".join(encode_message_event(m) for m in messages)
                if messages:
                    position = messages[-1].seq
                if state.up.received != acked_up or state.room_again():
                    acked_up = state.up.received
                    chunk += self._ack_event(state)
                if chunk:
                    await http.send(*head, h11.Data(data=chunk))
                    head = []
                    sent_bytes += len(chunk)
                    last_write = state.last_activity = trio.current_time()
                    chunk = b""
                if (
                    sent_bytes >= limits.max_stream_bytes
                    or trio.current_time() >= deadline
                    or state.down_generation != generation
                    or state.ended is not None
                ):
                    break
                if state.pending_after(position):
                    continue
                with trio.move_on_at(min(deadline, last_write + limits.heartbeat)):
                    await session.changed()
                now = trio.current_time()
                if now >= last_write + limits.heartbeat and now < deadline:
                    chunk = encode_heartbeat()
            await http.send(*head, h11.Data(data=encode_end_event()), h11.EndOfMessage())

        await http.run_until_disconnect(produce)

    def _ack_event(self, state: SessionState) -> bytes:
        return encode_ack_event(state.up.received)

    # -- up --------------------------------------------------------------------

    async def _up(self, http: HTTPExchange, session: Session, cors: list[tuple[str, str]]) -> bool:
        state = session.state
        if state.up_in_flight:
            await http.discard_body()
            raise _HTTPError(409, "another upstream request of this session is in flight")
        state.up_in_flight = True
        state.open_requests += 1
        try:
            body = await http.read_body(self.limits.max_batch_bytes)
            try:
                # Sizes are checked by the state (1009), not as malformed input.
                batch = decode_upstream(body, _unbounded_messages(self.limits))
                ack = state.take_upstream(batch, trio.current_time())
            except SequenceGap as exc:
                raise _HTTPError(409, str(exc)) from None
            except FallbackProtocolError as exc:
                raise _HTTPError(400, str(exc)) from None
            session.fire()
            answer = json.dumps({"ack": ack}).encode()
            await http.send_body(200, cors, answer, content_type="application/json")
            return True
        finally:
            state.up_in_flight = False
            state.open_requests -= 1
            state.last_activity = trio.current_time()

    # -- lifetime ----------------------------------------------------------------

    async def reap(self) -> None:
        """Forget finished and expired sessions (runs for the server's life)."""
        while True:
            await trio.sleep(min(1.0, self.limits.heartbeat / 2))
            now = trio.current_time()
            for session_id, session in list(self.sessions.items()):
                if session.state.forgettable(now):
                    self.forget(session_id, "session expired")

    def forget(self, session_id: str, reason: str) -> None:
        session = self.sessions.pop(session_id, None)
        if session is None:
            return
        session.state.end(reason)
        session.app_scope.deadline = trio.current_time() + self.config.app_grace
        session.fire()


async def run_fallback_server(
    config: FallbackConfig,
    *,
    task_status: trio.TaskStatus[FallbackServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the engine (its sessions' applications and expiry) until cancelled."""
    async with trio.open_nursery() as nursery:
        server = FallbackServer(config, nursery)
        nursery.start_soon(server.reap)
        task_status.started(server)


class _TrackedStatus:
    """A task status that remembers whether the application started."""

    def __init__(self, inner: trio.TaskStatus[Accepted]) -> None:
        self._inner = inner
        self.started_yet = False

    def started(self, value: Accepted | None = None) -> None:
        self.started_yet = True
        self._inner.started(value if value is not None else Accepted())


# -- helpers ----------------------------------------------------------------------


def _require(request: h11.Request, method: bytes) -> None:
    if request.method != method:
        raise _HTTPError(405, f"use {method.decode()} here")


def _response(status: int, headers: Iterable[tuple[str, str]]) -> h11.Response:
    return h11.Response(
        status_code=status,
        headers=[(name.encode("ascii"), value.encode("latin-1")) for name, value in headers],
    )


def _cors_headers(request: h11.Request) -> list[tuple[str, str]]:
    """Let pages from any origin use the fallback, as they may a WebSocket
    (the application sees the Origin and decides, as a WebSocket server does)."""
    origin = next((v for k, v in request.headers if k == b"origin"), None)
    if origin is None:
        return []
    return [
        ("Access-Control-Allow-Origin", origin.decode("latin-1")),
        ("Access-Control-Allow-Credentials", "true"),
        ("Vary", "Origin"),
    ]


async def _preflight(http: HTTPExchange, cors: list[tuple[str, str]]) -> None:
    headers = [
        *cors,
        ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
        ("Access-Control-Allow-Headers", "Content-Type, Last-Event-ID"),
        ("Access-Control-Max-Age", "600"),
    ]
    await http.send_body(204, headers, b"", content_type="")


def _last_event_id(request: h11.Request, query: dict[str, list[str]]) -> int:
    values = [v.decode("latin-1").strip() for k, v in request.headers if k == b"last-event-id"]
    values += query.get("last", [])[-1:]
    if not values:
        return 0
    text = values[0]
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise _HTTPError(400, f"bad Last-Event-ID {text[:40]!r}")
    return int(text)


def _parse_open(body: bytes) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    try:
        data = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise _HTTPError(400, "the open request body is not JSON") from None
    if not isinstance(data, dict):
        raise _HTTPError(400, "the open request body must be a JSON object")
    version = data.get("version", FALLBACK_VERSION)
    if version != FALLBACK_VERSION:
        raise _HTTPError(400, f"unsupported fallback protocol version {version!r}")
    subprotocols = data.get("subprotocols", [])
    if not isinstance(subprotocols, list) or not all(
        isinstance(p, str) and p and set(p) <= _TOKEN_CHARS for p in subprotocols
    ):
        raise _HTTPError(400, "subprotocols must be a list of tokens")
    headers = data.get("headers", [])
    if not isinstance(headers, list):
        raise _HTTPError(400, "headers must be a list of [name, value] pairs")
    pairs: list[tuple[str, str]] = []
    for item in headers:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not all(isinstance(part, str) for part in item)
            or not item[0]
            or not set(item[0]) <= _TOKEN_CHARS
            or any(c in item[1] for c in "\r\n\0")
        ):
            raise _HTTPError(400, "headers must be a list of [name, value] pairs")
        if item[0].lower() in RESERVED_HEADERS:
            raise _HTTPError(400, f"the header {item[0]} cannot be set")
        pairs.append((item[0], item[1]))
    return tuple(subprotocols), tuple(pairs)


def _bounded(messages: list[FallbackMessage], budget: int) -> list[FallbackMessage]:
    """A prefix of ``messages`` within ``budget`` bytes (at least one)."""
    taken: list[FallbackMessage] = []
    for message in messages:
        if taken and message.size > budget:
            break
        taken.append(message)
        budget -= message.size
    return taken


def _unbounded_messages(limits: SessionLimits) -> SessionLimits:
    # decode_upstream refuses big messages as malformed; the protocol closes
    # the session with 1009 instead, so let them through to the state.
    return replace(limits, max_message_size=limits.max_batch_bytes)
