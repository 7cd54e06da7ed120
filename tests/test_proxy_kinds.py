"""Proxy kinds and targets beyond the plain case: an https:// proxy (TLS to the
proxy, TLS-in-TLS for wss://), custom CONNECT headers, an IPv6 origin."""

from __future__ import annotations

import json

import pytest
import trio

from conftest import skip_or_fail
from scripted_proxy import ScriptedProxy, Step
from tunnelws import TLSError, open_websocket
from tunnelws_testnet.companion import ProxyConfig, serve_proxy
from tunnelws_testnet.origin import OriginConfig, make_test_ca, serve_origin


@pytest.fixture(scope="module")
def proxy_ca():  # type: ignore[no-untyped-def]
    """A CA of the proxy's own, distinct from the origin's."""
    return make_test_ca()


@pytest.mark.parametrize("secure", [False, True])
async def test_https_proxy_tls_to_proxy_then_tls_in_tls(
    nursery, origin, test_ca, proxy_ca, secure
) -> None:
    proxy = await nursery.start(serve_proxy, ProxyConfig(ssl_context=proxy_ca.server_context()))
    assert proxy.url.startswith("https://")
    trace: list[str] = []
    url = origin.wss_url() if secure else origin.ws_url()
    async with open_websocket(
        url,
        proxy=proxy.url,
        proxy_ssl_context=proxy_ca.client_context(),
        ssl_context=test_ca.client_context(),
        trace=trace.append,
    ) as ws:
        await ws.send("inside")
        assert await ws.receive() == "inside"
    tls_lines = [line for line in trace if line.startswith("* TLS with")]
    # One TLS session with the proxy, and for wss:// a second one, inside it,
    # with the origin: the proxy only relays ciphertext.
    assert [line.split()[3] for line in tls_lines] == (["proxy", "origin"] if secure else ["proxy"])
    assert proxy.stats.tunnels_total == 1


async def test_untrusted_https_proxy_is_a_proxy_tls_error(nursery, origin, proxy_ca) -> None:
    proxy = await nursery.start(serve_proxy, ProxyConfig(ssl_context=proxy_ca.server_context()))
    with pytest.raises(TLSError) as info:
        async with open_websocket(origin.ws_url(), proxy=proxy.url):
            pass
    assert info.value.peer == "proxy" and info.value.phase == "proxy-tls"
    assert info.value.exit_code == 9


async def test_custom_connect_headers_go_to_the_proxy_only(nursery, origin) -> None:
    proxy = ScriptedProxy([Step()])
    await nursery.start(proxy.serve)
    async with open_websocket(
        origin.ws_url("/info"), proxy=proxy.url, proxy_headers=[("X-Corp-Client", "ci-42")]
    ) as ws:
        info = json.loads(await ws.receive())
    assert "X-Corp-Client: ci-42\r\n" in proxy.requests[0].decode()
    received = {name.lower() for name, _ in info["headers"]}
    assert "x-corp-client" not in received and "proxy-authorization" not in received


async def test_ipv6_origin_authority_and_host_header(nursery, test_ca) -> None:
    try:
        origin6 = await nursery.start(serve_origin, OriginConfig(host="::1"))
    except OSError:
        skip_or_fail("no IPv6 loopback on this machine")
    proxy = ScriptedProxy([Step()])
    await nursery.start(proxy.serve)
    port = origin6.http[1]
    with trio.fail_after(10):
        async with open_websocket(f"ws://[::1]:{port}/info", proxy=proxy.url) as ws:
            info = json.loads(await ws.receive())
    assert proxy.requests[0].startswith(f"CONNECT [::1]:{port} HTTP/1.1\r\n".encode())
    assert ("Host", f"[::1]:{port}") in [tuple(h) for h in info["headers"]]
