"""The companion proxy's behaviours that block WebSocket while HTTP passes
(and make the HTTP fallback's life hard), seen by curl and raw clients:
CONNECT refused, squid's stock ports, Upgrade stripped inside intercepted
TLS, buffered responses, request time and body limits, responses reset
mid-body. The origin is the test network's (it offers the fallback)."""

from __future__ import annotations

import json
import ssl

import pytest
import trio

import tunnelws
from companion_support import run_curl, start_proxy
from fallback_support import Client, decode_events, messages_of
from origin_support import running_origin
from tunnelws.fallback import SessionLimits
from tunnelws_testnet.companion import PROFILES, SQUID_SAFE_PORTS, ProxyConfig, Toxics
from tunnelws_testnet.fallback import FallbackConfig
from tunnelws_testnet.origin import LocalCA


async def _curl_json(*args: str) -> object:
    done = await run_curl(*args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def _fallback_round_trip(proxy_url: str, base: str, *extra: str) -> list[str]:
    """open, up, poll with curl through the proxy: the texts echoed."""
    opened = await _curl_json(*extra, "-x", proxy_url, "--data", '{"version": 1}', f"{base}/open")
    sid = opened["session"]  # type: ignore[index]
    up = '{"ack":0,"messages":[{"seq":1,"type":"text","data":"through the proxy"}]}'
    assert await _curl_json(*extra, "-x", proxy_url, "--data", up, f"{base}/{sid}/up") == {"ack": 1}
    done = await run_curl(*extra, "-x", proxy_url, f"{base}/{sid}/down?mode=poll")
    return [str(m.data) for m in messages_of(decode_events(done.stdout))]


async def test_a_forward_only_proxy_refuses_connect_and_forwards_http(
    nursery: trio.Nursery,
) -> None:
    proxy = await start_proxy(nursery, **vars_of(PROFILES["forward-only"].config))
    async with running_origin() as origin:
        tunnel = await run_curl("-p", "-x", proxy.url, origin.http_url("/info"))
        assert tunnel.returncode != 0 and b"405" in tunnel.stderr
        with pytest.raises(tunnelws.TunnelError):  # no CONNECT, Upgrade stripped
            async with tunnelws.open_websocket(origin.ws_url(), proxy=proxy.url, fallback="never"):
                pass
        base = origin.http_url("/echo/_tunnelws/1")
        assert await _fallback_round_trip(proxy.url, base) == ["through the proxy"]
    assert proxy.stats.statuses[405] >= 1


async def test_squid_default_limits_connect_to_443_and_forwards_to_safe_ports(
    nursery: trio.Nursery,
) -> None:
    assert {80, 21, 443, 70, 210, 280, 488, 591, 777, 1025, 8000, 65535} <= SQUID_SAFE_PORTS
    assert 22 not in SQUID_SAFE_PORTS and 1024 not in SQUID_SAFE_PORTS
    proxy = await start_proxy(nursery, **vars_of(PROFILES["squid-default"].config))
    async with running_origin() as origin:
        tunnel = await run_curl("-p", "-x", proxy.url, origin.http_url("/info"))
        assert b"403" in tunnel.stderr, "CONNECT only to 443"
        info = await _curl_json("-x", proxy.url, origin.http_url("/info"))
        assert info["request_line"] == "GET /info HTTP/1.1"  # type: ignore[index]
        stripped = await run_curl(
            "-x", proxy.url, "-o", "/dev/null", "-w", "%{http_code}",
            "-H", "Upgrade: websocket", "-H", "Connection: Upgrade", origin.http_url("/echo"),
        )
        assert stripped.stdout == b"426", "the origin saw no Upgrade"
        denied = await run_curl("-x", proxy.url, "http://127.0.0.1:22/")
        assert b"403" in denied.stdout or denied.returncode != 0
    assert proxy.stats.statuses[403] == 2


async def test_upgrade_is_stripped_inside_intercepted_tls(
    nursery: trio.Nursery, test_ca: LocalCA
) -> None:
    proxy = await start_proxy(
        nursery, intercept=True, strip_upgrade=True,
        onward_ssl_context=test_ca.client_context(),
    )
    assert proxy.ca_path is not None
    async with running_origin(test_ca) as origin:
        proxy_ca = ssl.create_default_context(cafile=str(proxy.ca_path))
        trust = tunnelws.route_options(ssl_context=proxy_ca)
        with pytest.raises(tunnelws.HandshakeError) as failed:
            async with tunnelws.open_websocket(
                origin.wss_url(), route=trust, proxy=proxy.url, fallback="never"
            ):
                pass
        assert failed.value.status == 426
        base = origin.https_url("/echo/_tunnelws/1")
        echoed = await _fallback_round_trip(proxy.url, base, "--cacert", str(proxy.ca_path))
        assert echoed == ["through the proxy"]
    assert proxy.stats.intercepted >= 4


async def _first_byte_delay(proxy_url: str, url: str) -> tuple[float, bytes]:
    """Seconds from request to the first body byte through the proxy (raw)."""
    host, port = proxy_url.removeprefix("http://").rsplit(":", 1)
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            started = trio.current_time()
            await stream.send_all(f"GET {url} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            received = b""
            while b"\r\n\r\n" not in received:
                received += await stream.receive_some(65536)
            delay = trio.current_time() - started
            while chunk := await stream.receive_some(65536):
                received += chunk
            return delay, received


async def test_a_buffering_proxy_holds_responses_until_their_end_or_the_limit(
    nursery: trio.Nursery,
) -> None:
    holding = await start_proxy(nursery, buffer_responses=1024 * 1024)
    small = await start_proxy(nursery, buffer_responses=100)
    async with running_origin() as origin:
        stream = origin.http_url("/timestamp?interval=0.2&count=4&heartbeat=0")
        delay, whole = await _first_byte_delay(holding.url, stream)
        assert delay >= 0.5 and whole.count(b"\nid: ") == 4, "held until the end"
        delay, _ = await _first_byte_delay(small.url, stream)
        assert delay < 0.5, "passed on after 100 bytes"
    assert holding.stats.responses_buffered == 1


async def test_request_time_limit_and_body_cap(nursery: trio.Nursery) -> None:
    proxy = await start_proxy(nursery, request_time_limit=0.5, max_request_body=1000)
    async with running_origin() as origin:
        started = trio.current_time()
        cut = await run_curl("-x", proxy.url, origin.http_url("/timestamp?interval=0.1"))
        assert cut.returncode != 0 and 0.4 < trio.current_time() - started < 3
        big = await run_curl("-x", proxy.url, "-w", "%{http_code}", "-o", "/dev/null",
                             "--data", "x" * 1001, origin.http_url("/echo/_tunnelws/1/open"))
        assert big.stdout == b"413"
        chunked = await run_curl("-x", proxy.url, "-w", "%{http_code}", "-o", "/dev/null",
                                 "-H", "Transfer-Encoding: chunked", "--data", "{}",
                                 origin.http_url("/echo/_tunnelws/1/open"))
        assert chunked.stdout == b"411"
        fits = await run_curl("-x", proxy.url, "--data", '{"version": 1}',
                              origin.http_url("/echo/_tunnelws/1/open"))
        assert b'"session"' in fits.stdout


async def test_a_seeded_fraction_of_responses_is_reset_mid_body(nursery: trio.Nursery) -> None:
    proxy = await start_proxy(nursery, reset_responses=0.5, toxics=Toxics(seed=7))
    async with running_origin() as origin:
        url = origin.http_url("/")  # the page: a body of several KiB
        results = [await run_curl("-x", proxy.url, "-o", "/dev/null", url) for _ in range(20)]
    failed = sum(result.returncode != 0 for result in results)
    assert proxy.stats.responses_reset == failed
    assert 3 <= failed <= 17, "about half"
    assert all(r.returncode in (0, 18, 56) for r in results), [r.stderr for r in results]


async def test_the_fallback_survives_a_proxy_resetting_responses(nursery: trio.Nursery) -> None:
    """Long-polls and posts through resets: every message arrives, once, in order."""
    proxy = await start_proxy(nursery, reset_responses=0.3, toxics=Toxics(seed=3))
    limits = SessionLimits(poll_timeout=0.5)
    async with running_origin(fallback=FallbackConfig(limits=limits)) as origin:
        client = ResilientClient(origin.http, proxy.url)
        await client.open()
        for seq in range(1, 31):
            await client.send(seq, f"message {seq}")
        received: list[str] = []
        while len(received) < 30:
            received += await client.receive()
    assert received == [f"message {seq}" for seq in range(1, 31)]
    assert proxy.stats.responses_reset >= 5


def vars_of(config: ProxyConfig) -> dict[str, object]:
    """A profile's settings as start_proxy keywords (its port is ours)."""
    return {
        name: getattr(config, name)
        for name in ("allow_ports", "connect_ports", "refuse_connect", "strip_upgrade",
                     "buffer_responses")
    }


class ResilientClient:
    """Retries every request through the proxy, as the protocol says a client
    must (same content again; the windows make it safe)."""

    def __init__(self, origin: tuple[str, int], proxy_url: str) -> None:
        self.proxy_url = proxy_url
        self.client = Client(origin, "/echo")
        self.base = f"http://{origin[0]}:{origin[1]}"
        self.last = 0

    async def _curl(self, *args: str) -> bytes:
        for _ in range(50):
            done = await run_curl("-f", "-x", self.proxy_url, *args)
            if done.returncode == 0:
                return done.stdout
            await trio.sleep(0.05)
        raise AssertionError("50 tries failed")

    async def open(self) -> None:
        body = await self._curl("--data", '{"version": 1}', self.base + self.client.path("open"))
        self.client.session = json.loads(body)["session"]

    async def send(self, seq: int, data: str) -> None:
        batch = {"ack": self.last, "messages": [{"seq": seq, "type": "text", "data": data}]}
        await self._curl("--data", json.dumps(batch), self.base + self.client.path("up"))

    async def receive(self) -> list[str]:
        down = self.base + self.client.path("down")
        body = await self._curl(f"{down}?mode=poll&last={self.last}")
        got = messages_of(decode_events(body))
        if got:
            assert got[0].seq == self.last + 1, "in order, none lost"
            self.last = got[-1].seq
        return [str(m.data) for m in got]



def test_command_line_options_for_these_behaviours() -> None:
    from test_companion_cli import config_for

    config = config_for(
        "--refuse-connect", "--connect-ports", "443,8443", "--buffer-responses", "4096",
        "--request-time-limit", "2.5", "--max-request-body", "100", "--reset-responses", "0.01",
    )
    assert config.refuse_connect and config.connect_ports == frozenset({443, 8443})
    assert (config.buffer_responses, config.request_time_limit) == (4096, 2.5)
    assert (config.max_request_body, config.reset_responses) == (100, 0.01)
    assert config_for("--profile", "forward-only") == PROFILES["forward-only"].config
    with pytest.raises(SystemExit):
        config_for("--reset-responses", "2")
    with pytest.raises(ValueError, match="positive"):
        ProxyConfig(buffer_responses=0)
