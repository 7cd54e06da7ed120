"""The local proxy's absolute-form requests on the HTTP client's exchange
(``send_request``): request bodies streamed to an origin DIRECT and through
the companion proxy, sent again after squid's Digest challenge (or refused
clearly beyond the replay limit), the client's own User-Agent kept as it is,
and a time limit on a stuck upstream (a silent fake: byte-level
misbehaviour)."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import h11
import pytest
import trio

from companion_support import run_curl, start_proxy
from peers import run_squid
from relay_support import digest, payload, read_head, start_local_proxy
from tunnelws import RouteOptions
from tunnelws._http_forward import REPLAY_LIMIT


async def start_body_origin(nursery: trio.Nursery, seen: list[dict[str, Any]]) -> int:
    """An h11 origin that answers each request with its method, headers and
    the SHA-256 of its body, as JSON."""

    async def serve(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        body = bytearray()
        request: h11.Request | None = None
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                conn.receive_data(data)
                if not data and conn.their_state is not h11.DONE:
                    return
                continue
            if isinstance(event, h11.Request):
                request, body = event, bytearray()
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage) and request is not None:
                record = {
                    "method": request.method.decode(),
                    "headers": {k.decode().lower(): v.decode() for k, v in request.headers},
                    "size": len(body),
                    "sha256": digest(bytes(body)),
                }
                seen.append(record)
                answer = json.dumps(record).encode()
                length = ("Content-Length", str(len(answer)))
                await stream.send_all(conn.send(h11.Response(status_code=200, headers=[length])))
                await stream.send_all(conn.send(h11.Data(data=answer)))
                await stream.send_all(conn.send(h11.EndOfMessage()))
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
            else:
                return

    listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


@pytest.mark.parametrize("upstream_kind", ["direct", "proxy"])
async def test_a_request_body_streams_upstream_intact(
    nursery: trio.Nursery, tmp_path: Path, upstream_kind: str
) -> None:
    seen: list[dict[str, Any]] = []
    port = await start_body_origin(nursery, seen)
    route = RouteOptions(proxy=None)
    if upstream_kind == "proxy":
        upstream = await start_proxy(nursery)
        route = RouteOptions(proxy=upstream.url)
    local = await start_local_proxy(nursery, route)
    data = payload(REPLAY_LIMIT + 100 * 1024)  # beyond what is kept for a resend
    upload = tmp_path / "upload.bin"
    upload.write_bytes(data)
    url = f"http://127.0.0.1:{port}/upload"
    result = await run_curl("-x", local.url, "--data-binary", f"@{upload}", url, url)
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.replace(b"}{", b"}\n{").splitlines()
    answer = json.loads(first)
    assert answer["method"] == "POST" and answer["size"] == len(data)
    assert answer["sha256"] == digest(data)
    assert answer["headers"]["user-agent"].startswith("curl/")
    assert "proxy-authorization" not in answer["headers"]
    assert json.loads(second)["sha256"] == digest(data)
    assert len(seen) == 2


async def test_the_clients_request_goes_without_our_user_agent(nursery: trio.Nursery) -> None:
    seen: list[dict[str, Any]] = []
    port = await start_body_origin(nursery, seen)
    local = await start_local_proxy(nursery, RouteOptions(proxy=None))
    stream = await trio.open_tcp_stream(*local.address)
    await stream.send_all(
        f"GET http://127.0.0.1:{port}/x HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    )
    head, _ = await read_head(stream)
    await stream.aclose()
    assert head.startswith(b"HTTP/1.1 200"), head
    (record,) = seen
    assert "user-agent" not in record["headers"]


async def test_a_silent_upstream_times_out(nursery: trio.Nursery) -> None:
    accepted: list[trio.SocketStream] = []

    async def silent(stream: trio.SocketStream) -> None:
        accepted.append(stream)
        await trio.sleep_forever()  # reads nothing, answers nothing

    listeners = await nursery.start(partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    local = await start_local_proxy(
        nursery, RouteOptions(proxy=f"http://127.0.0.1:{port}"), idle_timeout=0.5
    )
    stream = await trio.open_tcp_stream(*local.address)
    await stream.send_all(b"GET http://origin.invalid/ HTTP/1.1\r\nHost: origin.invalid\r\n\r\n")
    head, _ = await read_head(stream, limit=5)
    await stream.aclose()
    assert head.startswith(b"HTTP/1.1 504"), head
    assert b"X-Tunnelws-Error: timeout" in head
    assert len(accepted) == 1


@pytest.mark.parametrize("beyond", [False, True])
async def test_a_body_is_sent_again_after_a_challenge_up_to_the_replay_limit(
    nursery: trio.Nursery, tmp_path: Path, beyond: bool
) -> None:
    seen: list[dict[str, Any]] = []
    port = await start_body_origin(nursery, seen)
    credentials = ("alice", "pa55-w0rd-xyzzy")
    data = payload(REPLAY_LIMIT + 1024 if beyond else 60 * 1024)
    upload = tmp_path / "upload.bin"
    upload.write_bytes(data)
    url = f"http://127.0.0.1:{port}/upload"
    # squid keeps the connection after a 407 to a request with a body; it
    # stalls on a second body beyond about 64 KiB, hence the small one.
    with run_squid(tmp_path=tmp_path, allow_ports=None, digest_auth=credentials) as squid:
        local = await start_local_proxy(
            nursery, RouteOptions(proxy=squid.url, proxy_auth=credentials)
        )
        result = await run_curl("-i", "-x", local.url, "--data-binary", f"@{upload}", url)
    assert b"pa55" not in result.stdout
    if not beyond:
        assert b"HTTP/1.1 200 " in result.stdout, result.stdout[:600]
        (record,) = seen
        assert record["size"] == len(data) and record["sha256"] == digest(data)
        return
    assert b"HTTP/1.1 502 " in result.stdout, result.stdout[:600]
    assert b"tunnelws local-proxy: proxy-auth" in result.stdout
    assert b"256 KiB" in result.stdout
    assert seen == []
