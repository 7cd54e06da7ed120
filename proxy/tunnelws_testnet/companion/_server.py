"""The companion proxy's trio server: accepts clients, reads request heads,
authenticates, applies policy and quirks, and opens tunnels or forwards.

All protocol decisions live in the pure modules; this one moves bytes, applies
timeouts and keeps the stats and the log.
"""

from __future__ import annotations

import random
import ssl
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import trio

from ._auth import Authenticator, NTLMSession
from ._config import ProxyConfig
from ._forward import rewrite_request
from ._intercept import InterceptCA, InterceptFailed, intercept_streams
from ._log import ProxyLog
from ._policy import Policy
from ._quirks import GARBAGE_REPLY, build_response, connect_success, refusal_response
from ._relay import Direction, RelayResult, relay
from ._request import (
    BadRequest,
    RequestHead,
    RequestHeadParser,
    parse_absolute_url,
    parse_authority,
)
from ._responses import CuttingStream, HoldingStream
from ._stats import ProxyStats
from ._streams import abort_stream, can_half_close, prefixed, send_reply
from ._toxics import Toxics

__all__ = ["RunningProxy", "serve_proxy"]

RECEIVE_BYTES = 16 * 1024
LINGER_SECONDS = 1.0
LINGER_MAX_BYTES = 1024 * 1024


@dataclass
class RunningProxy:
    """What ``await nursery.start(serve_proxy, config)`` returns."""

    host: str
    port: int
    scheme: str
    stats: ProxyStats
    config: ProxyConfig
    ca_path: Path | None = None  # the interception CA certificate, when intercepting

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


class _Client:
    """One accepted client connection and what the proxy read from it."""

    def __init__(self, stream: trio.abc.Stream, peer: str, max_head_bytes: int) -> None:
        self.stream = stream
        self.peer = peer
        self.max_head_bytes = max_head_bytes
        self.leftover = b""
        # NTLM/Negotiate state: those schemes authenticate the connection.
        self.auth_session = NTLMSession()


class _Proxy:
    def __init__(self, config: ProxyConfig, stats: ProxyStats, log: ProxyLog) -> None:
        self.config = config
        self.stats = stats
        self.log = log
        self.authenticator: Authenticator | None = config.authenticator()
        self.policy: Policy = config.policy()
        self.ca: InterceptCA | None = InterceptCA(config.ca_dir) if config.intercept else None
        self.onward_context = config.onward_ssl_context or ssl.create_default_context()
        self.rng = random.Random(config.toxics.seed)

    # -- connection lifecycle ---------------------------------------------

    async def handle(self, stream: trio.SocketStream) -> None:
        self.stats.connections += 1
        self.stats.connections_open += 1
        try:
            peer = _format_peer(stream.socket.getpeername())
        except OSError:
            peer = "?"
        transport: trio.abc.Stream = stream
        try:
            if self.config.ssl_context is not None:
                transport = trio.SSLStream(
                    stream, self.config.ssl_context, server_side=True, https_compatible=True
                )
                with trio.move_on_after(self.config.head_timeout) as scope:
                    await transport.do_handshake()
                if scope.cancelled_caught:
                    return
            await self._serve(_Client(transport, peer, self.config.max_head_bytes))
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError):
            pass
        except Exception as exc:
            # A bug handling one client must not take the whole proxy down;
            # the log and the counter make it visible instead.
            self.stats.internal_errors += 1
            self.log.emit("error", client=peer, detail=f"{type(exc).__name__}: {exc}")
        finally:
            self.stats.connections_open -= 1
            await trio.aclose_forcefully(transport)

    async def _serve(self, client: _Client) -> None:
        """Answer requests until one opens a tunnel, is forwarded, or fails."""
        while True:
            head = await self._read_head(client)
            if head is None:
                return
            self.stats.requests += 1
            keep_going = await self._dispatch(client, head)
            if not keep_going:
                return

    async def _read_head(self, client: _Client) -> RequestHead | None:
        parser = RequestHeadParser(client.max_head_bytes)
        pending, client.leftover = client.leftover, b""
        with trio.move_on_after(self.config.head_timeout):
            try:
                head = parser.feed(pending)
                while head is None:
                    data = await client.stream.receive_some(RECEIVE_BYTES)
                    if not data:
                        return None
                    head = parser.feed(bytes(data))
            except BadRequest as exc:
                await self._bad_request(client, exc.status, exc.message)
                return None
            client.leftover = parser.leftover
            return head
        if parser.buffered:
            await self._bad_request(client, 408, "request head not complete in time")
        return None

    async def _bad_request(self, client: _Client, status: int, detail: str) -> None:
        self.stats.bad_requests += 1
        self.log.emit("bad-request", client=client.peer, status=status, detail=detail)
        await self._send(client, refusal_response(status, detail, self.config.quirks, close=True))
        self.stats.statuses[status] += 1
        await _lingering_close(client.stream)

    async def _send(self, client: _Client, data: bytes) -> None:
        with trio.move_on_after(self.config.head_timeout):
            await send_reply(client.stream, data, dribble=self.config.quirks.dribble)

    async def _refuse(
        self, client: _Client, head: RequestHead, status: int, detail: str, **fields: Any
    ) -> None:
        self.stats.statuses[status] += 1
        self.log.emit(
            "refused",
            client=client.peer,
            method=head.method,
            target=head.target,
            status=status,
            detail=detail,
            **fields,
        )
        await self._send(client, refusal_response(status, detail, self.config.quirks, close=True))
        await _lingering_close(client.stream)

    # -- dispatch ---------------------------------------------------------

    async def _dispatch(self, client: _Client, head: RequestHead) -> bool:
        """Handle one request; True if the connection should read another."""
        is_connect = head.method == "CONNECT"
        absolute = "://" in head.target and not head.target.startswith("/")
        try:
            if is_connect:
                self.stats.connects += 1
                host, port = parse_authority(head.target)
                path = ""
            elif absolute:
                self.stats.absolute_form += 1
                host, port, path = parse_absolute_url(head.target)
            elif self.config.transparent and head.target.startswith("/"):
                host_header = head.get("host")
                if host_header is None:
                    raise BadRequest(400, "transparent request without Host")
                host, port = parse_authority(host_header, default_port=80)
                path = head.target
            else:
                raise BadRequest(400, "this proxy needs CONNECT or an absolute http:// URL")
        except BadRequest as exc:
            await self._refuse(client, head, exc.status, exc.message)
            return False

        credentials_sent = head.get("proxy-authorization") is not None
        user: str | None = None
        mechanism: str | None = None  # for NTLM/Negotiate: "ntlm" or "kerberos"
        # A transparent proxy is invisible to the client, so it cannot challenge.
        if self.authenticator is not None and (is_connect or absolute):
            result = self.authenticator.verify(
                head.method, head.target, head.get("proxy-authorization"), client.auth_session
            )
            for message in result.messages:
                self.log.emit("auth-message", client=client.peer, ntlm=message)
            if not result.ok:
                return await self._challenge(client, head, result.reason, result.stale)
            user, mechanism = result.user, result.mechanism

        if is_connect and self.config.refuse_connect:
            await self._refuse(client, head, 405, "this proxy does not allow CONNECT", user=user)
            return False
        refusal = self.policy.check(host, port, connect=is_connect)
        if refusal is not None:
            await self._refuse(client, head, refusal.status, refusal.reason, user=user)
            return False

        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.stats.targets[target] += 1
        fields = {
            "client": client.peer,
            "method": head.method,
            "target": head.target,
            "user": user,
            "credentials": credentials_sent,
        }
        if mechanism is not None:
            fields["mechanism"] = mechanism
        if is_connect:
            await self._tunnel(client, host, port, fields)
        else:
            await self._forward(client, head, host, port, path, fields)
        return False

    async def _challenge(
        self, client: _Client, head: RequestHead, reason: str, stale: bool
    ) -> bool:
        assert self.authenticator is not None
        self.stats.auth_challenges += 1
        self.stats.statuses[407] += 1
        if head.get("proxy-authorization") is not None:
            self.stats.auth_rejected += 1
        # A body we would have to skip, or an HTTP/1.0 client, ends the connection.
        close = (
            self.config.close_after_407
            or head.has_body
            or "close" in head.connection_tokens()
            or (head.version == "1.0" and "keep-alive" not in head.connection_tokens())
        )
        self.log.emit(
            "auth-required",
            client=client.peer,
            method=head.method,
            target=head.target,
            status=407,
            credentials=head.get("proxy-authorization") is not None,
            detail=reason,
        )
        headers = [
            (
                "Proxy-Authenticate",
                self.authenticator.challenge(stale=stale, session=client.auth_session),
            )
        ]
        if close:
            headers.append(("Connection", "close"))
        else:
            headers.append(("Proxy-Connection", "keep-alive"))
        body = b"<html><body><h1>407 Proxy Authentication Required</h1></body></html>\n"
        await self._send(
            client, build_response(407, headers, body, http10=self.config.quirks.http10)
        )
        return not close

    # -- origin connection --------------------------------------------------

    async def _connect_origin(
        self, client: _Client, host: str, port: int, fields: dict[str, Any]
    ) -> trio.SocketStream | None:
        status, detail = 502, ""
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        with trio.move_on_after(self.config.connect_timeout) as scope:
            try:
                return await trio.open_tcp_stream(host, port)
            except OSError as exc:
                detail = f"cannot connect to {authority}: {exc.strerror or exc}"
        if scope.cancelled_caught:
            status, detail = 504, f"timed out connecting to {authority}"
        self.stats.statuses[status] += 1
        self.log.emit("refused", status=status, detail=detail, **fields)
        await self._send(client, refusal_response(status, detail, self.config.quirks, close=True))
        await _lingering_close(client.stream)
        return None

    def _count_bytes(self, direction: Direction, n: int) -> None:
        if direction == "up":
            self.stats.bytes_up += n
        else:
            self.stats.bytes_down += n

    async def _relay(
        self,
        client_side: trio.abc.Stream,
        origin: trio.abc.Stream,
        toxics: Toxics | None = None,
    ) -> RelayResult:
        rng = random.Random(self.rng.getrandbits(64))
        result = await relay(
            client_side, origin, toxics or self.config.toxics, rng=rng, on_bytes=self._count_bytes
        )
        if result.end == "reset":
            self.stats.resets += 1
        elif result.end == "idle-timeout":
            self.stats.idle_timeouts += 1
        return result

    # -- CONNECT ------------------------------------------------------------

    async def _tunnel(self, client: _Client, host: str, port: int, fields: dict[str, Any]) -> None:
        quirks = self.config.quirks
        if quirks.close_without_reply:
            self.log.emit("quirk", quirk="close-without-reply", **fields)
            return
        if quirks.never_reply:
            self.log.emit("quirk", quirk="never-reply", **fields)
            # Stay silent until the client gives up; drain so its close is noticed.
            while await client.stream.receive_some(RECEIVE_BYTES):
                pass
            return
        if quirks.garbage:
            self.log.emit("quirk", quirk="garbage", **fields)
            await self._send(client, GARBAGE_REPLY)
            return
        if quirks.reply_status is not None:
            status = quirks.reply_status
            await self._refuse_fields(client, status, "configured reply status", fields)
            return

        origin = await self._connect_origin(client, host, port, fields)
        if origin is None:
            return
        started = trio.current_time()
        try:
            await self._send(client, connect_success(quirks))
        except BaseException:
            await trio.aclose_forcefully(origin)
            raise
        self.stats.statuses[200] += 1
        self.stats.tunnels_total += 1
        self.stats.tunnels_open += 1
        intercepted = False
        try:
            client_side: trio.abc.Stream = prefixed(client.stream, client.leftover)
            origin_side: trio.abc.Stream = origin
            if self.ca is not None:
                first = client.leftover
                if not first:
                    with trio.move_on_after(self.config.head_timeout):
                        first = bytes(await client.stream.receive_some(RECEIVE_BYTES))
                try:
                    client_side, origin_side, intercepted = await intercept_streams(
                        client.stream,
                        origin,
                        host,
                        self.ca,
                        self.onward_context,
                        first_bytes=first,
                        handshake_timeout=self.config.connect_timeout,
                    )
                except InterceptFailed as exc:
                    self.log.emit(
                        "tunnel",
                        status=200,
                        end="tls-failed",
                        detail=str(exc),
                        intercepted=True,
                        duration=round(trio.current_time() - started, 3),
                        **fields,
                    )
                    await trio.aclose_forcefully(origin)
                    return
                if intercepted:
                    self.stats.intercepted += 1
                    if self.config.strip_upgrade:
                        client_side = await self._strip_inside(client_side, origin_side, host, port)
            result = await self._relay(client_side, origin_side)
        finally:
            self.stats.tunnels_open -= 1
            await trio.aclose_forcefully(origin)
        self.log.emit(
            "tunnel",
            status=200,
            end=result.end,
            bytes_up=result.bytes_up,
            bytes_down=result.bytes_down,
            duration=round(trio.current_time() - started, 3),
            intercepted=intercepted,
            **fields,
        )

    async def _strip_inside(
        self, client_side: trio.abc.Stream, origin_side: trio.abc.Stream, host: str, port: int
    ) -> trio.abc.Stream:
        """Rewrite the first request inside an intercepted tunnel as a
        forwarded one (``Upgrade`` dropped); the origin then closes after its
        answer, as for forwarded requests."""
        parser = RequestHeadParser(self.config.max_head_bytes)
        head = None
        with trio.move_on_after(self.config.head_timeout):
            try:
                while head is None:
                    data = await client_side.receive_some(RECEIVE_BYTES)
                    if not data:
                        break
                    head = parser.feed(bytes(data))
            except BadRequest:
                head = None
        if head is None:
            return client_side  # not HTTP (or nothing): relay whatever comes
        bracketed = f"[{host}]" if ":" in host else host
        host_header = head.get("host") or (bracketed if port == 443 else f"{bracketed}:{port}")
        await origin_side.send_all(
            rewrite_request(head, host_header, head.target, strip_upgrade=True)
        )
        return prefixed(client_side, parser.leftover)

    async def _refuse_fields(
        self, client: _Client, status: int, detail: str, fields: dict[str, Any]
    ) -> None:
        self.stats.statuses[status] += 1
        self.log.emit("refused", status=status, detail=detail, **fields)
        await self._send(client, refusal_response(status, detail, self.config.quirks, close=True))
        await _lingering_close(client.stream)

    # -- forwarding -----------------------------------------------------------

    async def _forward(
        self,
        client: _Client,
        head: RequestHead,
        host: str,
        port: int,
        path: str,
        fields: dict[str, Any],
    ) -> None:
        refusal = self._body_refusal(head)
        if refusal is not None:
            await self._refuse(client, head, refusal[0], refusal[1], user=fields["user"])
            return
        origin = await self._connect_origin(client, host, port, fields)
        if origin is None:
            return
        self.stats.forwards += 1
        started = trio.current_time()
        bracketed = f"[{host}]" if ":" in host else host
        host_header = bracketed if port == 80 else f"{bracketed}:{port}"
        outgoing = rewrite_request(head, host_header, path, strip_upgrade=self.config.strip_upgrade)
        try:
            await origin.send_all(outgoing)
        except trio.BrokenResourceError:
            await trio.aclose_forcefully(origin)
            await self._refuse_fields(client, 502, "origin closed the connection", fields)
            return
        client_side = prefixed(client.stream, client.leftover)
        origin_side: trio.abc.Stream = origin
        if self.config.buffer_responses is not None:
            origin_side = HoldingStream(origin_side, self.config.buffer_responses, self._held)
        reset = self.config.reset_responses and self.rng.random() < self.config.reset_responses
        if reset:

            async def cut() -> None:
                self.stats.responses_reset += 1
                await abort_stream(client.stream)

            origin_side = CuttingStream(origin_side, random.Random(self.rng.getrandbits(64)), cut)
        toxics = self.config.toxics
        if self.config.request_time_limit is not None:
            limit = min(self.config.request_time_limit, toxics.max_lifetime or float("inf"))
            toxics = replace(toxics, max_lifetime=limit)
        result = await self._relay(client_side, origin_side, toxics)
        self.log.emit(
            "forward",
            upgrade=head.get("upgrade") is not None,
            upgrade_stripped=self.config.strip_upgrade and head.get("upgrade") is not None,
            end=result.end,
            bytes_up=result.bytes_up,
            bytes_down=result.bytes_down,
            duration=round(trio.current_time() - started, 3),
            **fields,
        )


    def _held(self) -> None:
        self.stats.responses_buffered += 1

    def _body_refusal(self, head: RequestHead) -> tuple[int, str] | None:
        limit = self.config.max_request_body
        if limit is None or not head.has_body:
            return None
        length = head.get("content-length")
        if length is None or not length.strip().isdigit():
            return 411, "a request body needs a Content-Length here"
        if int(length) > limit:
            return 413, f"request bodies are limited to {limit} bytes"
        return None


async def _lingering_close(stream: trio.abc.Stream) -> None:
    """Half-close, then discard what the client is still sending for a moment:
    closing with unread bytes would send a TCP reset that can destroy the
    error reply before the client reads it."""
    with trio.move_on_after(LINGER_SECONDS):
        if can_half_close(stream):
            await stream.send_eof()  # type: ignore[attr-defined]
        discarded = 0
        while discarded < LINGER_MAX_BYTES:
            data = await stream.receive_some(RECEIVE_BYTES)
            if not data:
                return
            discarded += len(data)


def _format_peer(address: Any) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve_proxy(
    config: ProxyConfig,
    *,
    task_status: trio.TaskStatus[RunningProxy] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the companion proxy until cancelled.

    Start it with ``proxy = await nursery.start(serve_proxy, config)``; the
    :class:`RunningProxy` gives its address, URL, live stats and CA path.
    """
    stats = ProxyStats()
    log = ProxyLog(config.log)
    proxy: _Proxy | None = None
    try:
        proxy = _Proxy(config, stats, log)
        listeners = await trio.open_tcp_listeners(config.port, host=config.host)
        if config.port == 0 and len(listeners) > 1:
            # Port 0 on a name with several addresses binds each to a different port.
            for extra in listeners[1:]:
                await extra.aclose()
            listeners = listeners[:1]
        host, port = listeners[0].socket.getsockname()[:2]
        running = RunningProxy(
            host=host,
            port=port,
            scheme="https" if config.ssl_context is not None else "http",
            stats=stats,
            config=config,
            ca_path=proxy.ca.cert_path if proxy.ca is not None else None,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, proxy.handle, listeners)
            task_status.started(running)
    finally:
        log.close()
        if proxy is not None and proxy.ca is not None:
            proxy.ca.cleanup()
