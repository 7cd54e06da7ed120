"""The browser shim (tunnelws.js) in real headless Chromium, through the
companion proxy where WebSocket cannot pass: the compatibility page's
fallback checks pass and its verdict says so; behind a buffering proxy the
shim switches to long-polling."""

from __future__ import annotations

from pathlib import Path

import trio

from origin_support import origin_ca, running_origin
from test_origin_browser import _run_page_check
from tunnelws_testnet.companion import PROFILES, RunningProxy, serve_proxy
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
