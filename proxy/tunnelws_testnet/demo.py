"""``tunnelws demo``: the whole path on loopback, with a real third-party proxy.

Starts the origin test server (ws:// and wss:// with a throwaway CA) and
pproxy demanding Basic authentication, then runs an echo over ws:// and over
wss:// through a CONNECT tunnel, printing what happens at each hop.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from tunnelws import TunnelError, open_websocket

from .origin import OriginConfig, make_test_ca, serve_origin

__all__ = ["PProxy", "run_demo", "run_pproxy"]

PPROXY_START_TIMEOUT = 15.0
SERVING_LINE = re.compile(rb"Serving on .*?:(\d+) by http")


@dataclass(frozen=True)
class PProxy:
    """A running pproxy process: its URL (no credentials) and PID."""

    url: str
    pid: int


@asynccontextmanager
async def run_pproxy(*, user: str, password: str) -> AsyncIterator[PProxy]:
    """Run pproxy on a free loopback port with Basic auth, checked on every
    connection (``--auth 0``); stop it by PID on exit."""
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-u",
            "-m",
            "pproxy",
            "-l",
            f"http://127.0.0.1:0#{user}:{password}",
            "--auth",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        output = b""
        with trio.move_on_after(PPROXY_START_TIMEOUT):
            while not (match := SERVING_LINE.search(output)):
                chunk = await process.stdout.receive_some()
                if not chunk:
                    break
                output += chunk
        if match is None:
            raise RuntimeError(f"pproxy did not start: {output.decode(errors='replace')}")
        yield PProxy(url=f"http://127.0.0.1:{int(match.group(1))}", pid=process.pid)
    finally:
        process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


async def run_demo(*, out: Callable[[str], None] = print, keep: bool = False) -> int:
    """Run the demo; returns the exit code (0 when both echoes worked)."""
    user, password = "demo", secrets.token_urlsafe(12)
    ca = make_test_ca()
    out("tunnelws demo: WebSocket through an authenticating proxy, all on loopback\n")
    async with trio.open_nursery() as nursery:
        origin = await nursery.start(
            serve_origin, OriginConfig(tls_port=0, ssl_context=ca.server_context())
        )
        out(f"origin  tunnelws serve   {origin.ws_url()}  {origin.wss_url()}")
        out(f"        its test CA      {ca.ca_pem_path}")
        async with run_pproxy(user=user, password=password) as pproxy:
            out(f"proxy   pproxy (PyPI)    {pproxy.url}  Basic auth as {user!r}, pid {pproxy.pid}")
            proxy_url = f"http://{user}:{password}@{pproxy.url.removeprefix('http://')}"
            failures = 0
            for url in (origin.ws_url(), origin.wss_url()):
                out("")
                failures += not await _echo_through(url, proxy_url, ca.client_context(), out)
            out("")
            if failures:
                out(f"{failures} of 2 echoes failed.")
            else:
                out("Both echoes crossed the proxy inside a CONNECT tunnel; the password never")
                out("appeared above. Try it yourself:")
                out(f"  echo hi | tunnelws connect {origin.ws_url()} --proxy {pproxy.url} "
                    f"--proxy-user {user}:*** -v")
            if keep:
                # The user asked to keep using this throwaway proxy, so they
                # need its generated password: said once, on request only.
                out(f"\n--keep: servers stay up; the demo proxy's password is {password!r}.")
                out("Ctrl-C to stop.")
                await trio.sleep_forever()
        nursery.cancel_scope.cancel()
    return 1 if failures else 0


async def _echo_through(
    url: str, proxy_url: str, ssl_context: object, out: Callable[[str], None]
) -> bool:
    scheme = url.split(":", 1)[0]
    out(f"== {scheme}:// echo through the proxy ==")
    message = f"hello over {scheme}://"
    try:
        async with open_websocket(
            url,
            proxy=proxy_url,
            ssl_context=ssl_context,  # type: ignore[arg-type]
            trace=lambda line: out(f"  {line}"),
        ) as ws:
            started = time.perf_counter()
            await ws.send(message)
            reply = await ws.receive()
            elapsed_ms = (time.perf_counter() - started) * 1000
    except TunnelError as exc:
        out(f"  FAILED ({exc.category}, exit {exc.exit_code}): {exc}")
        return False
    out(f"  sent {message!r}, received {reply!r} in {elapsed_ms:.1f} ms")
    return reply == message
