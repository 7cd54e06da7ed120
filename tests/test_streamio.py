"""StreamIO, the descriptor-level reads and writes of plain TCP connections:
data in order, large writes that must wait for the peer, closing and a
reset peer as trio's own stream would report them, other streams passed
through."""

from __future__ import annotations

import os
import socket
import struct

import pytest
import trio
import trio.testing

from tunnelws._streamio import StreamIO


async def tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        accepted: list[trio.SocketStream] = []

        async def accept() -> None:
            accepted.append(await listener.accept())

        nursery.start_soon(accept)
        client = await trio.open_tcp_stream("127.0.0.1", port)
    await listener.aclose()
    return client, accepted[0]


async def test_bytes_arrive_in_order_both_ways() -> None:
    client, server = await tcp_pair()
    ours = StreamIO(client)
    payload = os.urandom(8 << 20)  # far more than the socket buffers hold

    async def drain() -> bytes:
        received = bytearray()
        while len(received) < len(payload):
            received += await server.receive_some(1 << 20)
        return bytes(received)

    got: list[bytes] = []
    async with trio.open_nursery() as nursery:

        async def reader() -> None:
            got.append(await drain())

        nursery.start_soon(reader)
        await ours.send_all(payload)  # must wait for the reader more than once
    assert got == [payload]
    await server.send_all(b"reply")
    assert await ours.receive_some(100) == b"reply"


async def test_closing_wakes_a_waiting_read_with_closed_resource() -> None:
    client, server = await tcp_pair()
    ours = StreamIO(client)
    async with trio.open_nursery() as nursery:
        raised: list[BaseException] = []

        async def read() -> None:
            try:
                await ours.receive_some(100)
            except trio.ClosedResourceError as exc:
                raised.append(exc)

        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        await client.aclose()
    assert raised
    with pytest.raises(trio.ClosedResourceError):
        await ours.send_all(b"x")
    await server.aclose()


async def test_a_reset_peer_is_a_broken_resource() -> None:
    client, server = await tcp_pair()
    ours = StreamIO(client)
    # SO_LINGER 0: closing sends a RST instead of a FIN.
    server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await server.aclose()
    with pytest.raises(trio.BrokenResourceError), trio.fail_after(5):
        while True:
            await ours.send_all(b"x" * 65536)
    await client.aclose()


async def test_eof_reads_as_empty() -> None:
    client, server = await tcp_pair()
    ours = StreamIO(client)
    await server.send_all(b"last")
    await server.aclose()
    received = b""
    while chunk := await ours.receive_some(100):
        received += chunk
    assert received == b"last"
    await client.aclose()


async def test_other_streams_go_through_their_own_methods() -> None:
    left, right = trio.testing.memory_stream_pair()
    ours = StreamIO(left)
    await ours.send_all(b"through")
    assert await right.receive_some(100) == b"through"
    await right.send_all(b"back")
    assert await ours.receive_some(100) == b"back"
