"""The compatibility page in real headless Chromium (Playwright drives it, no
bundled browser download), directly and through a real proxy (pproxy)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from conftest import require_binary
from origin_support import origin_ca, running_origin
from peers import run_pproxy
from tunnelws_testnet.origin import LocalCA, OriginAddresses

__all__ = ["origin_ca"]  # fixture re-export

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def pproxy(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A real HTTP proxy (pproxy -v): its port and its log file; stopped by PID."""
    with run_pproxy(tmp_path=tmp_path) as proxy:
        assert proxy.log_path is not None
        yield proxy.port, proxy.log_path


def _check_page(
    chromium: str, url: str, screenshot: Path, extra_flags: list[str]
) -> tuple[str, list[list[str]]]:
    """Runs in a thread: load the page, wait for the verdict, read the table."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, args=CHROMIUM_FLAGS + extra_flags
        )
        try:
            # The page's wss:// check meets a certificate from the test CA,
            # which this throwaway browser profile is told to accept.
            context = browser.new_context(ignore_https_errors=True, viewport={"width": 800,
                                                                              "height": 900})
            page = context.new_page()
            page.goto(url, timeout=15000)
            page.wait_for_function(
                "document.getElementById('verdict').dataset.verdict !== ''", timeout=30000
            )
            verdict = page.get_attribute("#verdict", "data-verdict") or ""
            rows = page.eval_on_selector_all(
                "#results tbody tr",
                "rows => rows.map(r => Array.from(r.cells).map(c => c.textContent))",
            )
            # The interactive echo client: connect, send, see the echo in the log.
            page.click("#connect")
            page.wait_for_selector("#log .CONNECTED", timeout=10000)
            page.fill("#message", "typed in the browser")
            page.click("#send")
            page.wait_for_selector("#log .RECEIVED", timeout=10000)
            received = page.text_content("#log .RECEIVED") or ""
            assert "typed in the browser" in received
            page.screenshot(path=str(screenshot), full_page=True)
            return verdict, rows
        finally:
            browser.close()


async def _run_page_check(
    origin: OriginAddresses, tmp_path: Path, name: str, extra_flags: list[str]
) -> tuple[str, list[list[str]]]:
    chromium = require_binary("chromium")
    # playwright is in the test extras: missing, it is an install bug, not a skip.
    import playwright  # noqa: F401
    screenshot = tmp_path / f"{name}.png"
    with trio.fail_after(60):
        verdict, rows = await trio.to_thread.run_sync(
            _check_page, chromium, origin.http_url("/"), screenshot, extra_flags
        )
    assert screenshot.stat().st_size > 10000
    print(f"screenshot: {screenshot}")
    return verdict, rows


def _assert_all_checks_passed(verdict: str, rows: list[list[str]]) -> None:
    failed = [row for row in rows if "fail" in row[1]]
    assert not failed, failed
    assert verdict == "works", rows
    names = " ".join(row[0] for row in rows)
    for check in ("Text echo (ws://)", "Text echo (wss://)", "Binary echo (blob) (wss://)",
                  "Close code and reason", "Latency", "EventSource receives timestamps"):
        assert check in names


async def test_page_verdict_works_in_chromium(origin_ca: LocalCA, tmp_path: Path) -> None:
    async with running_origin(origin_ca) as origin:
        verdict, rows = await _run_page_check(origin, tmp_path, "direct", [])
    _assert_all_checks_passed(verdict, rows)
    latency = next(row for row in rows if row[0].startswith("Latency"))
    assert "ms" in latency[2]


async def test_page_verdict_works_through_a_proxy(
    origin_ca: LocalCA, tmp_path: Path, pproxy: tuple[int, Path]
) -> None:
    pproxy_port, pproxy_log = pproxy
    async with running_origin(origin_ca) as origin:
        # Chromium bypasses proxies for loopback unless told otherwise.
        flags = [
            f"--proxy-server=http://127.0.0.1:{pproxy_port}",
            "--proxy-bypass-list=<-loopback>",
        ]
        verdict, rows = await _run_page_check(origin, tmp_path, "proxied", flags)
    _assert_all_checks_passed(verdict, rows)
    # The proxy really carried both ports (pproxy -v logs each connection).
    logged = pproxy_log.read_text()
    assert f":{origin.http[1]}" in logged and f":{origin.https[1]}" in logged, logged
