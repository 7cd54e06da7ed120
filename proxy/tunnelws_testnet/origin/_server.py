"""The origin test server: listeners, per-connection loop and routing."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from functools import partial
from urllib.parse import urlsplit

import h11
import trio

from tunnelws.fallback import FallbackPath
from tunnelws_testnet.fallback import (
    SHIM_PATH,
    Application,
    FallbackServer,
    run_fallback_server,
    shim_js,
)

from . import _sse, _websocket
from ._config import OriginAddresses, OriginConfig, RequestInfo
from ._fallback import echo_application, info_application
from ._http import HTTPConnection, describe_peer, serve_http
from ._info import describe_request
from ._page import page_config, page_html

logger = logging.getLogger("tunnelws_testnet.origin")

WEBSOCKET_PATHS = ("/echo", "/info")
PLAIN_PATHS = ("/", "/config", "/info", "/timestamp", SHIM_PATH)


async def serve_origin(
    config: OriginConfig,
    *,
    task_status: trio.TaskStatus[OriginAddresses] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the origin endpoints until cancelled.

    Start it with ``addresses = await nursery.start(serve_origin, config)``;
    the returned :class:`OriginAddresses` hold the bound ports. Cancel the
    nursery to stop; open connections are closed with it.
    """
    http_listeners = await trio.open_tcp_listeners(config.port, host=config.host)
    tcp_for_tls: list[trio.SocketListener] = []
    if config.tls_port is not None:
        tcp_for_tls = await trio.open_tcp_listeners(config.tls_port, host=config.host)
    addresses = OriginAddresses(
        http=_bound(http_listeners[0]),
        https=_bound(tcp_for_tls[0]) if tcp_for_tls else None,
    )
    tls_listeners = [
        # The handshake happens lazily on the first read, inside the
        # connection's request timeout.
        trio.SSLListener(listener, config.ssl_context, https_compatible=True)
        for listener in tcp_for_tls
        if config.ssl_context is not None
    ]
    async with trio.open_nursery() as nursery:
        limits = replace(config.fallback.limits, max_message_size=config.max_message_size)
        fallback = await nursery.start(
            run_fallback_server, replace(config.fallback, limits=limits)
        )
        handler = partial(
            _serve_connection, config=config, addresses=addresses, fallback=fallback
        )
        await nursery.start(trio.serve_listeners, handler, http_listeners)
        if tls_listeners:
            await nursery.start(trio.serve_listeners, handler, tls_listeners)
        logger.info("origin serving %s", addresses)
        task_status.started(addresses)


def _bound(listener: trio.SocketListener) -> tuple[str, int]:
    address = listener.socket.getsockname()
    return (str(address[0]), int(address[1]))


async def _serve_connection(
    stream: trio.abc.Stream,
    *,
    config: OriginConfig,
    addresses: OriginAddresses,
    fallback: FallbackServer,
) -> None:
    async def route(http: HTTPConnection, request: h11.Request) -> bool:
        if config.on_request is not None:
            config.on_request(_request_info(request, http.stream))
        return await _route(http, request, addresses, fallback)

    await serve_http(stream, config, route)


def _request_info(request: h11.Request, stream: trio.abc.Stream) -> RequestInfo:
    peer = describe_peer(stream)
    return RequestInfo(
        method=request.method.decode("ascii", errors="replace"),
        target=request.target.decode("ascii", errors="replace"),
        http_version=request.http_version.decode("ascii", errors="replace"),
        headers=tuple(
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in request.headers.raw_items()
        ),
        client=peer.client,
        tls=peer.tls,
        tls_version=peer.tls_version,
        tls_cipher=peer.cipher,
        alpn=peer.alpn,
    )


async def _route(
    http: HTTPConnection,
    request: h11.Request,
    addresses: OriginAddresses,
    fallback: FallbackServer,
) -> bool:
    """Answer one request; False when the connection must not be reused."""
    target = request.target.decode("ascii", errors="replace")
    parts = urlsplit(target)
    path = parts.path
    logger.info("%s %s", request.method.decode("ascii", errors="replace"), target)
    handled = await fallback.route(http, request, partial(_fallback_application, http, request))
    if handled is not None:
        return handled
    await http.discard_body()
    if path in WEBSOCKET_PATHS and (
        path == "/echo" or _websocket.is_upgrade_request(request)
    ):
        return await _websocket_endpoint(http, request, path)
    if path not in PLAIN_PATHS:
        await http.send_error(404, f"no such endpoint: {path} (try /, /echo, /info, /timestamp)")
        return False
    if request.method not in (b"GET", b"HEAD"):
        await http.send_error(405, "only GET and HEAD are allowed here", [("Allow", "GET, HEAD")])
        return False
    head_only = request.method == b"HEAD"
    if path == "/":
        await http.send_body(
            200, [], page_html(), content_type="text/html; charset=utf-8", head_only=head_only
        )
    elif path == SHIM_PATH:
        await http.send_body(
            200, [], shim_js(), content_type="text/javascript; charset=utf-8", head_only=head_only
        )
    elif path == "/config":
        await http.send_json(page_config(addresses), head_only=head_only)
    elif path == "/info":
        info = describe_request(request, describe_peer(http.stream), websocket=False)
        await http.send_json(info, head_only=head_only)
    else:  # /timestamp
        try:
            plan = _sse.parse_stream_request(parts.query, _last_event_id(request))
        except _sse.StreamParameterError as exc:
            await http.send_error(400, str(exc))
            return False
        await _sse.stream_timestamps(http, plan, head_only)
        return False
    return True


def _fallback_application(
    http: HTTPConnection, request: h11.Request, path: FallbackPath
) -> Application | None:
    """What serves a new fallback session on ``path.resource``: the same
    endpoints as over WebSocket."""
    resource = urlsplit(path.resource).path
    if resource == "/echo":
        return echo_application()
    if resource == "/info" and path.endpoint == "open":
        info = describe_request(request, describe_peer(http.stream), websocket=True)
        return info_application(info)
    return None


def _last_event_id(request: h11.Request) -> str | None:
    for name, value in request.headers:
        if name == b"last-event-id":
            return value.decode("utf-8", errors="replace")
    return None


async def _websocket_endpoint(http: HTTPConnection, request: h11.Request, path: str) -> bool:
    handshake = _websocket.check_handshake(request, compression=http.config.compression)
    if isinstance(handshake, _websocket.HandshakeRejected):
        await http.send_error(handshake.status, handshake.message, handshake.headers)
        return False
    ws = await _websocket.accept(http, handshake)
    first_message = None
    if path == "/info":
        info = describe_request(
            request,
            describe_peer(http.stream),
            websocket=True,
            subprotocol=handshake.subprotocol,
            offered_subprotocols=handshake.offered_subprotocols,
            extensions=handshake.deflate.header_value() if handshake.deflate else None,
            offered_extensions=handshake.offered_extensions,
        )
        first_message = json.dumps(info)
    await _websocket.EchoSession(http, ws).run(first_message)
    return False
