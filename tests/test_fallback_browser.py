"""The browser shim (tunnelws.js) in real headless Chromium, through the
companion proxy where WebSocket cannot pass: the compatibility page's
fallback checks pass and its verdict says so; behind a buffering proxy the
shim switches to long-polling; through the gateway it reaches a third-party
WebSocket server."""

from __future__ import annotations

from pathlib import Path

import trio

from conftest import require_binary
from origin_support import origin_ca, running_origin
from test_gateway import websockets_backend
from test_origin_browser import CHROMIUM_FLAGS, _run_page_check
from tunnelws_testnet.companion import PROFILES, RunningProxy, serve_proxy
from tunnelws_testnet.gateway import GatewayConfig, serve_gateway
from tunnelws_testnet.origin import LocalCA

__all__ = ["origin_ca"]  # fixture re-export


async def _page_through(
    profile: str, origin_ca: LocalCA, tmp_path: Path
) -> tuple[str, list[list[str]], RunningProxy]:
    """The page's verdict and rows in Chromium through a companion profile."""
    async with trio.open_nursery() as nursery:
        proxy = await nursery.start(serve_proxy, PROFILES[profile].config)
        # Chromium bypasses proxies for loopback unless told otherwise.
        flags = [f"--proxy-server={proxy.url}", "--proxy-bypass-list=<-loopback>"]
        async with running_origin(origin_ca) as origin:
            verdict, rows = await _run_page_check(origin, tmp_path, profile, flags)
        nursery.cancel_scope.cancel()
    return verdict, rows, proxy


def _rows(rows: list[list[str]], part: str) -> list[list[str]]:
    return [row for row in rows if part in row[0]]


async def test_the_page_works_through_the_fallback_behind_a_forward_only_proxy(
    origin_ca: LocalCA, tmp_path: Path
) -> None:
    verdict, rows, proxy = await _page_through("forward-only", origin_ca, tmp_path)
    assert verdict == "works (through the HTTP fallback)", rows
    native = _rows(rows, "(ws://)")
    assert native and all("fail" in row[1] for row in native), native
    fallback = _rows(rows, "(ws://, HTTP fallback)")
    names = [row[0] for row in fallback]
    for check in ("Connect", "Subprotocol negotiation", "Text echo", "Binary echo (arraybuffer)",
                  "Binary echo (blob)", "Latency, median of 20 round trips",
                  "Close code and reason round trip"):
        assert f"{check} (ws://, HTTP fallback)" in names, names
    assert all("pass" in row[1] for row in fallback), fallback
    (mode,) = _rows(fallback, "Downstream mode")
    assert mode[2].startswith("stream:"), mode
    assert proxy.stats.statuses[405] >= 1, "Chromium's CONNECT was refused"


async def test_behind_a_buffering_proxy_the_shim_long_polls(
    origin_ca: LocalCA, tmp_path: Path
) -> None:
    verdict, rows, proxy = await _page_through("buffering", origin_ca, tmp_path)
    assert verdict == "works (through the HTTP fallback)", rows
    fallback = _rows(rows, "(ws://, HTTP fallback)")
    assert all("pass" in row[1] for row in fallback), fallback
    (mode,) = _rows(fallback, "Downstream mode")
    assert mode[2].startswith("poll:"), mode
    assert proxy.stats.responses_buffered >= 1


GATEWAY_SCRIPT = """
async (url) => {
  const ws = new TunnelWebSocket(url, ["nope", "chat.v1"]);
  ws.binaryType = "arraybuffer";
  const next = () => new Promise((resolve, reject) => {
    ws.onmessage = (event) => resolve(event.data);
    ws.onclose = (event) => reject(new Error("closed " + event.code + " " + ws.fallbackError));
  });
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onclose = (event) => reject(new Error("closed " + event.code + " " + ws.fallbackError));
  });
  const result = { transport: ws.transport, reason: ws.fallbackReason, protocol: ws.protocol };
  ws.send("hello through the gateway");
  result.text = await next();
  ws.send(new Uint8Array([0, 1, 2, 255]));
  result.binary = Array.from(new Uint8Array(await next()));
  result.close = await new Promise((resolve) => {
    ws.onclose = (event) => resolve([event.code, event.reason, event.wasClean]);
    ws.close(4005, "bye");
  });
  return result;
}
"""


def _in_chromium(chromium: str, page_url: str, ws_url: str, proxy_url: str) -> dict[str, object]:
    from playwright.sync_api import sync_playwright

    flags = [f"--proxy-server={proxy_url}", "--proxy-bypass-list=<-loopback>"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium,
                                             args=[*CHROMIUM_FLAGS, *flags])
        try:
            page = browser.new_page()
            page.goto(page_url, timeout=15000)
            result: dict[str, object] = page.evaluate(GATEWAY_SCRIPT, ws_url)
            return result
        finally:
            browser.close()


async def test_the_shim_reaches_a_third_party_server_through_the_gateway(
    origin_ca: LocalCA,
) -> None:
    """A page on one origin, the gateway on another (CORS), python-websockets
    behind it, a forward-only proxy in between."""
    chromium = require_binary("chromium")
    async with trio.open_nursery() as nursery:
        proxy = await nursery.start(serve_proxy, PROFILES["forward-only"].config)
        async with websockets_backend() as port, running_origin() as origin:
            config = GatewayConfig(backend=f"ws://127.0.0.1:{port}")
            gateway = await nursery.start(serve_gateway, config)
            with trio.fail_after(60):
                result = await trio.to_thread.run_sync(
                    _in_chromium, chromium, origin.http_url("/"), gateway.ws_url("/echo"),
                    proxy.url,
                )
        nursery.cancel_scope.cancel()
    assert result["transport"] == "fallback" and "failed" in str(result["reason"])
    assert result["protocol"] == "chat.v1", "the backend's choice"
    assert result["text"] == "hello through the gateway"
    assert result["binary"] == [0, 1, 2, 255]
    assert result["close"] == [4005, "bye", True]
