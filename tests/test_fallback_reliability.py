"""Reliability of the fallback end to end: 10,000 numbered messages each
way between the browser shim (in Chromium) and the origin's echo, through a
forwarding proxy that refuses CONNECT, buffers every response and resets 1 %
of them mid-body. None may be lost, duplicated or reordered."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import trio

from conftest import require_binary
from origin_support import running_origin
from test_origin_browser import CHROMIUM_FLAGS
from tunnelws.fallback import SessionLimits
from tunnelws_testnet.companion import PROFILES, Toxics, serve_proxy
from tunnelws_testnet.fallback import FallbackConfig

MESSAGES = 10_000

# Runs in the page: sends 1..N as text, collects the echoes, reports.
SCRIPT = """
async ([url, count]) => {
  const ws = new TunnelWebSocket(url, [], { fallback: "only" });
  const got = [];
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onclose = (event) => reject(new Error("closed " + event.code + " " + ws.fallbackError));
  });
  const done = new Promise((resolve, reject) => {
    ws.onmessage = (event) => { got.push(event.data); if (got.length === count) resolve(); };
    ws.onclose = (event) => reject(new Error("closed " + event.code + " " + ws.fallbackError));
  });
  for (let i = 1; i <= count; i++) ws.send(String(i));
  await done;
  const mode = ws.downstreamMode;
  const closed = new Promise((resolve) => { ws.onclose = (event) => resolve(event.code); });
  ws.close(1000, "done");
  return { got, mode, closeCode: await closed };
}
"""


def _run(chromium: str, page_url: str, ws_url: str, proxy_url: str) -> dict[str, Any]:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium,
            args=[
                *CHROMIUM_FLAGS, f"--proxy-server={proxy_url}", "--proxy-bypass-list=<-loopback>"
            ],
        )
        try:
            page = browser.new_page()
            for _ in range(5):  # the page itself may be one of the responses reset
                try:
                    page.goto(page_url, timeout=15000)
                    page.wait_for_function("typeof TunnelWebSocket === 'function'", timeout=5000)
                    break
                except PlaywrightError:
                    continue
            result: dict[str, Any] = page.evaluate(SCRIPT, [ws_url, MESSAGES])
            return result
        finally:
            browser.close()


@pytest.mark.parametrize(
    ("reset_fraction", "window"),
    [(0.01, 256), (0.05, 16)],  # the 1 %; then many more requests and resets
)
async def test_ten_thousand_messages_each_way_through_buffering_and_resets(
    reset_fraction: float, window: int
) -> None:
    chromium = require_binary("chromium")
    import playwright  # noqa: F401  (test extras: missing is an install bug)

    config = PROFILES["buffering"].config
    config = replace(config, reset_responses=reset_fraction, toxics=Toxics(seed=11))
    fallback = FallbackConfig(limits=SessionLimits(window=window))
    async with trio.open_nursery() as nursery:
        proxy = await nursery.start(serve_proxy, config)
        async with running_origin(fallback=fallback) as origin:
            with trio.fail_after(110):
                result = await trio.to_thread.run_sync(
                    _run, chromium, origin.http_url("/"), origin.ws_url("/echo"), proxy.url
                )
        nursery.cancel_scope.cancel()
    assert result["got"] == [str(i) for i in range(1, MESSAGES + 1)]
    assert result["mode"] == "poll", "the buffering proxy was detected"
    assert result["closeCode"] == 1000
    assert proxy.stats.responses_reset >= 1, "some responses were reset"
    print(f"responses reset: {proxy.stats.responses_reset} of {proxy.stats.forwards}")
