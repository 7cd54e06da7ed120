"""TLS interception: certificates signed on the fly by the proxy's CA."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
import trio
from websockets.trio.client import connect

from companion_support import OriginCA, run_curl, start_origin, start_proxy, wait_until_idle


async def echo_once(url: str, proxy: str, **kwargs: Any) -> str:
    with trio.fail_after(10):
        async with connect(url, proxy=proxy, open_timeout=5, **kwargs) as websocket:
            await websocket.send("inspected?")
            reply = await websocket.recv()
    assert isinstance(reply, str)
    return reply


def trusting(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


async def test_client_trusting_the_proxy_ca_works(nursery: trio.Nursery, tmp_path: Path) -> None:
    origin_ca = OriginCA()
    origin = await start_origin(nursery, origin_ca.server_context())
    records: list[dict[str, Any]] = []
    proxy = await start_proxy(
        nursery,
        intercept=True,
        ca_dir=tmp_path,
        onward_ssl_context=origin_ca.client_context(),
        log=records.append,
    )
    assert proxy.ca_path is not None and proxy.ca_path.parent == tmp_path
    proxy_ca = trusting(proxy.ca_path)
    assert await echo_once(origin.ws_url, proxy.url, ssl=proxy_ca) == "inspected?"
    # The proxy CA signed what the client saw: the origin's own CA does not validate it.
    with pytest.raises(trio.BrokenResourceError) as caught:
        await echo_once(origin.ws_url, proxy.url, ssl=origin_ca.client_context())
    assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
    result = await run_curl("-p", "-x", proxy.url, "--cacert", str(proxy.ca_path), origin.http_url)
    assert result.returncode == 0, result.stderr
    untrusted = await run_curl("-p", "-x", proxy.url, origin.http_url)
    assert untrusted.returncode == 60  # curl: peer certificate cannot be authenticated
    await wait_until_idle(proxy)
    assert proxy.stats.intercepted == 2
    assert [r["end"] == "tls-failed" for r in records if r["event"] == "tunnel"].count(True) == 2


async def test_plain_ws_passes_an_intercepting_proxy_intact(nursery: trio.Nursery) -> None:
    origin = await start_origin(nursery)
    proxy = await start_proxy(nursery, intercept=True)
    assert await echo_once(origin.ws_url, proxy.url) == "inspected?"
    assert proxy.stats.intercepted == 0 and proxy.stats.tunnels_total == 1


async def test_onward_tls_is_verified(nursery: trio.Nursery) -> None:
    origin_ca = OriginCA()
    origin = await start_origin(nursery, origin_ca.server_context())
    records: list[dict[str, Any]] = []
    # The proxy trusts only the system store, so the origin's test certificate fails.
    proxy = await start_proxy(nursery, intercept=True, log=records.append)
    assert proxy.ca_path is not None
    with pytest.raises((ssl.SSLError, trio.BrokenResourceError, EOFError, OSError)):
        await echo_once(origin.ws_url, proxy.url, ssl=trusting(proxy.ca_path))
    await wait_until_idle(proxy)
    (record,) = [r for r in records if r["event"] == "tunnel"]
    assert record["end"] == "tls-failed" and "origin" in record["detail"]
