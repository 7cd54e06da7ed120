"""Reply quirks of real proxies, and the proxy's own request-head limits."""

from __future__ import annotations

import contextlib

import trio

from companion_support import (
    raw_connect,
    run_curl,
    start_origin,
    start_proxy,
    wait_until_idle,
)
from tunnelws_testnet.companion import ReplyQuirks
from tunnelws_testnet.companion._quirks import GARBAGE_REPLY


async def read_to_eof(stream: trio.abc.Stream, limit: float = 3.0) -> bytes:
    data = b""
    with trio.fail_after(limit):
        while chunk := await stream.receive_some(65536):
            data += chunk
    return data


async def test_http10_and_2xx_headers_are_sent_and_curl_copes(nursery: trio.Nursery) -> None:
    origin = await start_origin(nursery)
    quirks = ReplyQuirks(
        http10=True, connection_close=True, content_length=True, transfer_encoding=True
    )
    proxy = await start_proxy(nursery, quirks=quirks)
    reply = await raw_connect(proxy, f"127.0.0.1:{origin.port}")
    assert reply.head.startswith(b"HTTP/1.0 200 ")
    for header in (b"Connection: close", b"Content-Length: 1234", b"Transfer-Encoding: chunked"):
        assert header in reply.head
    await reply.stream.aclose()
    result = await run_curl("-p", "-x", proxy.url, origin.http_url)
    assert result.returncode == 0, result.stderr


async def test_dribble_arrives_one_byte_per_read(nursery: trio.Nursery) -> None:
    origin = await start_origin(nursery)
    proxy = await start_proxy(nursery, quirks=ReplyQuirks(dribble=True))
    reply = await raw_connect(proxy, f"127.0.0.1:{origin.port}")
    assert reply.status == 200
    # Paced single-byte writes: a reader sees (nearly) one byte per read.
    assert reply.reads > len(reply.head) // 2, (reply.reads, len(reply.head))
    await reply.stream.aclose()
    result = await run_curl("-p", "-x", proxy.url, origin.http_url)
    assert result.returncode == 0, result.stderr


async def test_garbage_close_and_error_status_replies(nursery: trio.Nursery) -> None:
    origin = await start_origin(nursery)
    target = f"127.0.0.1:{origin.port}"
    garbage = await start_proxy(nursery, quirks=ReplyQuirks(garbage=True))
    reply = await raw_connect(garbage, target)
    assert reply.head + await read_to_eof(reply.stream) == GARBAGE_REPLY
    # curl 7.88 cannot parse the reply and gives up with its exit 43.
    refused = await run_curl("-p", "-x", garbage.url, origin.http_url)
    assert refused.returncode == 43, refused.stderr

    closer = await start_proxy(nursery, quirks=ReplyQuirks(close_without_reply=True))
    reply = await raw_connect(closer, target)
    assert reply.head == b"" and reply.reads == 0
    aborted = await run_curl("-p", "-x", closer.url, origin.http_url)
    assert aborted.returncode == 56 and b"Proxy CONNECT aborted" in aborted.stderr

    erroring = await start_proxy(nursery, quirks=ReplyQuirks(reply_status=502))
    result = await run_curl("-p", "-x", erroring.url, origin.http_url)
    assert result.returncode != 0 and b"502" in result.stderr
    reply = await raw_connect(erroring, target)
    body = await read_to_eof(reply.stream)
    assert reply.status == 502 and b"<html>" in reply.head + body


async def test_never_reply_stays_silent_until_the_client_leaves(nursery: trio.Nursery) -> None:
    origin = await start_origin(nursery)
    proxy = await start_proxy(nursery, quirks=ReplyQuirks(never_reply=True))
    stream = await trio.open_tcp_stream(proxy.host, proxy.port)
    await stream.send_all(f"CONNECT 127.0.0.1:{origin.port} HTTP/1.1\r\n\r\n".encode())
    with trio.move_on_after(0.5) as silence:
        await stream.receive_some(1)
    assert silence.cancelled_caught
    assert proxy.stats.connections_open == 1
    await stream.aclose()
    await wait_until_idle(proxy)  # the proxy noticed and released the connection


async def test_huge_reply_header_block(nursery: trio.Nursery) -> None:
    origin = await start_origin(nursery)
    proxy = await start_proxy(nursery, quirks=ReplyQuirks(huge_headers=True))
    reply = await raw_connect(proxy, f"127.0.0.1:{origin.port}")
    assert reply.status == 200 and len(reply.head) > 64 * 1024
    await reply.stream.aclose()


async def test_request_head_limits(nursery: trio.Nursery) -> None:
    proxy = await start_proxy(nursery, head_timeout=0.3)
    cases = [
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", b"400"),  # TLS to a plain proxy
        (b"CONNECT h:1 HTTP/1.1\r\nX: " + b"a" * 70 * 1024 + b"\r\n\r\n", b"431"),
        (b"CONNECT h:1 HTTP/1.1\r\nHost: h", b"408"),  # never finished
    ]
    for request, status in cases:
        stream = await trio.open_tcp_stream(proxy.host, proxy.port)
        # The proxy may answer and close before reading everything.
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all(request)
        reply = await read_to_eof(stream)
        assert reply.split(b" ")[1] == status, reply[:80]
        await stream.aclose()
    assert proxy.stats.bad_requests == 3
    # A connection that sends nothing at all is closed without a reply.
    stream = await trio.open_tcp_stream(proxy.host, proxy.port)
    assert await read_to_eof(stream) == b""
