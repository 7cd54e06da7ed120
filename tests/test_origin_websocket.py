"""/echo and /info against real WebSocket clients: python-websockets (trio
client, same event loop) and websocket-client (sync, in a worker thread)."""

from __future__ import annotations

import json
import socket
import ssl
import struct

import pytest
import trio
import websocket  # websocket-client
from websockets.exceptions import ConnectionClosedError
from websockets.trio.client import connect

from conftest import skip_or_fail
from origin_support import origin_ca, running_origin
from tunnelws_testnet.origin import LocalCA

__all__ = ["origin_ca"]  # fixture re-export

MIB = 1024 * 1024
# websockets reads proxy settings from the environment unless told not to.
NO_PROXY = {"proxy": None, "compression": None}


async def test_text_and_binary_are_echoed_with_their_type() -> None:
    async with running_origin() as origin, connect(origin.ws_url(), **NO_PROXY) as ws:
        await ws.send("héllo ✓")
        assert await ws.recv() == "héllo ✓"
        await ws.send(b"\x00\xffbinary")
        assert await ws.recv() == b"\x00\xffbinary"
        await ws.send(["frag", "mented"])  # a fragmented text message
        assert await ws.recv() == "fragmented"


async def test_first_offered_subprotocol_is_selected() -> None:
    async with running_origin() as origin:
        async with connect(origin.ws_url(), subprotocols=["chat.v2", "chat.v1"], **NO_PROXY) as ws:
            assert ws.subprotocol == "chat.v2"
        async with connect(origin.ws_url(), **NO_PROXY) as ws:
            assert ws.subprotocol is None


async def test_close_code_and_reason_are_echoed() -> None:
    async with running_origin() as origin:
        async with connect(origin.ws_url(), **NO_PROXY) as ws:
            await ws.aclose(4321, "custom reason ✓")
        assert ws.protocol.close_rcvd is not None
        assert (ws.protocol.close_rcvd.code, ws.protocol.close_rcvd.reason) == (
            4321,
            "custom reason ✓",
        )


async def test_pings_are_answered() -> None:
    async with running_origin() as origin, connect(origin.ws_url(), **NO_PROXY) as ws:
        pong_received = await ws.ping(b"are you there")  # a trio.Event
        with trio.fail_after(5):
            await pong_received.wait()
        await ws.send("still open")
        assert await ws.recv() == "still open"


async def test_16_mib_message_round_trips_and_larger_closes_1009() -> None:
    big = bytes(range(256)) * (16 * MIB // 256)
    async with running_origin() as origin:
        async with connect(origin.ws_url(), max_size=17 * MIB, **NO_PROXY) as ws:
            await ws.send(big)
            with trio.fail_after(20):
                assert await ws.recv() == big
        async with connect(origin.ws_url(), max_size=17 * MIB, **NO_PROXY) as ws:
            await ws.send(big + b"!")
            with pytest.raises(ConnectionClosedError), trio.fail_after(20):
                await ws.recv()
            assert ws.protocol.close_rcvd is not None
            assert ws.protocol.close_rcvd.code == 1009


async def test_smaller_max_message_size_is_enforced_across_fragments() -> None:
    async with running_origin(max_message_size=10) as origin, connect(
        origin.ws_url(), **NO_PROXY
    ) as ws:
        await ws.send("0123456789")
        assert await ws.recv() == "0123456789"
        await ws.send(["012345", "6789X"])
        with pytest.raises(ConnectionClosedError):
            await ws.recv()
        assert ws.protocol.close_rcvd is not None
        assert ws.protocol.close_rcvd.code == 1009


async def test_wss_with_the_test_ca(origin_ca: LocalCA) -> None:
    async with running_origin(origin_ca) as origin:
        async with connect(origin.wss_url(), ssl=origin_ca.client_context(), **NO_PROXY) as ws:
            await ws.send("over tls")
            assert await ws.recv() == "over tls"
        # Without trusting the CA the certificate is rejected (verification is real).
        with pytest.raises(BaseException) as raised:
            async with connect(origin.wss_url(), ssl=ssl.create_default_context(), **NO_PROXY):
                pass
        assert _contains(raised.value, ssl.SSLCertVerificationError)


def _contains(exc: BaseException, kind: type[BaseException]) -> bool:
    if isinstance(exc, kind):
        return True
    inner_exceptions = getattr(exc, "exceptions", None)  # an exception group
    if inner_exceptions is not None:
        return any(_contains(inner, kind) for inner in inner_exceptions)
    return exc.__cause__ is not None and _contains(exc.__cause__, kind)


async def test_info_websocket_reports_headers_subprotocol_and_tls(origin_ca: LocalCA) -> None:
    async with running_origin(origin_ca) as origin, connect(
        origin.wss_url("/info?x=1"),
        ssl=origin_ca.client_context(),
        subprotocols=["first", "second"],
        additional_headers={"X-Custom-Header": "Custom Value"},
        **NO_PROXY,
    ) as ws:
        info = json.loads(await ws.recv())
        await ws.send("then echo")
        assert await ws.recv() == "then echo"
    assert info["request_line"] == "GET /info?x=1 HTTP/1.1"
    assert ["X-Custom-Header", "Custom Value"] in info["headers"]
    names = [name.lower() for name, _ in info["headers"]]
    assert names.index("host") < names.index("x-custom-header")  # received order kept
    assert info["websocket"] is True
    assert info["subprotocol"] == "first"
    assert info["offered_subprotocols"] == ["first", "second"]
    assert info["tls"] is True and info["tls_version"].startswith("TLS")
    assert info["client"]["host"] == "127.0.0.1"


async def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        skip_or_fail("no IPv6")
    try:
        async with running_origin(host="::1") as origin:
            assert origin.ws_url().startswith("ws://[::1]:")
            async with connect(origin.ws_url(), **NO_PROXY) as ws:
                await ws.send("v6")
                assert await ws.recv() == "v6"
    except OSError as exc:
        skip_or_fail(f"::1 not usable here: {exc}")


def _websocket_client_session(url: str, ca_path: str | None) -> dict[str, object]:
    """Runs in a thread: a second, independent client implementation."""
    sslopt = {"ca_certs": ca_path} if ca_path else None
    ws = websocket.create_connection(
        url, timeout=5, subprotocols=["one", "two"], sslopt=sslopt, http_no_proxy=["*"]
    )
    try:
        ws.send("text from websocket-client")
        text = ws.recv()
        ws.send_binary(b"\x01\x02\x03")
        opcode, binary = ws.recv_data(control_frame=False)
        ws.ping(b"p")
        pong_opcode, pong = ws.recv_data(control_frame=True)
        ws.send_close(status=4002, reason=b"closing now")
        close_opcode, close_payload = ws.recv_data(control_frame=True)
        return {
            "subprotocol": ws.getsubprotocol(),
            "text": text,
            "binary": (opcode, binary),
            "pong": (pong_opcode, pong),
            "close": (close_opcode, close_payload),
        }
    finally:
        ws.shutdown()


@pytest.mark.parametrize("secure", [False, True], ids=["ws", "wss"])
async def test_websocket_client_library(secure: bool, origin_ca: LocalCA) -> None:
    async with running_origin(origin_ca) as origin:
        url = origin.wss_url() if secure else origin.ws_url()
        ca_path = str(origin_ca.ca_pem_path) if secure else None
        with trio.fail_after(15):
            result = await trio.to_thread.run_sync(_websocket_client_session, url, ca_path)
    assert result["subprotocol"] == "one"
    assert result["text"] == "text from websocket-client"
    assert result["binary"] == (websocket.ABNF.OPCODE_BINARY, b"\x01\x02\x03")
    assert result["pong"] == (websocket.ABNF.OPCODE_PONG, b"p")
    close_payload = struct.pack("!H", 4002) + b"closing now"
    assert result["close"] == (websocket.ABNF.OPCODE_CLOSE, close_payload)
