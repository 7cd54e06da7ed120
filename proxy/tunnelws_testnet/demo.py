"""``tunnelws demo``: the whole story on loopback, in seconds.

1. starts the origin test server (``ws://`` and ``wss://``, throwaway CA) and
   the companion proxy in its strict-corporate profile (Basic auth, CONNECT
   only to 443, ``Upgrade`` stripped, idle tunnels closed);
2. runs ``check`` over ``ws://`` (refused by the port policy, with the
   diagnosis and the remedy) and over ``wss://`` (every step passes);
3. runs an echo session with ``tunnelws connect`` through the proxy;
4. crosses a real third-party proxy too (pproxy, with Basic auth);
5. says where to open the browser compatibility page.

The proxy's port list is the profile's ``443`` plus the origin's TLS port,
which stands in for 443 on loopback (binding 443 needs privileges and may be
taken). Passwords are generated per run and shown as ``***``.
"""

from __future__ import annotations

import re
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import trio

from tunnelws import TunnelError, open_websocket
from tunnelws.check import (
    CheckOptions,
    CheckReport,
    StepResult,
    render_conclusion,
    render_step,
    run_check,
)

from .companion import PROFILES, RunningProxy, serve_proxy
from .origin import LocalCA, OriginAddresses, OriginConfig, make_test_ca, serve_origin
from .peers import Pproxy, open_proxy

__all__ = ["run_demo"]

CONNECT_SESSION_TIMEOUT = 30.0
SESSION_LINES = ("hello through the corporate proxy", "a second message")

Out = Callable[[str], None]


def _with_credentials(proxy_url: str, user: str, password: str) -> str:
    scheme, _, rest = proxy_url.partition("://")
    return f"{scheme}://{user}:{password}@{rest}"


async def run_demo(*, out: Out = print, keep: bool = False) -> int:
    """Run the demo; returns the exit code (0 when every part went as expected)."""
    with tempfile.TemporaryDirectory(prefix="tunnelws-demo-") as directory:
        return await _run_demo(Path(directory), out, keep)


async def _run_demo(directory: Path, out: Out, keep: bool) -> int:
    user, password = "demo", secrets.token_urlsafe(12)
    ca = make_test_ca(directory=directory)
    out("tunnelws demo: WebSocket through a strict corporate proxy, all on loopback\n")
    async with trio.open_nursery() as nursery:
        origin: OriginAddresses = await nursery.start(
            serve_origin, OriginConfig(tls_port=0, ssl_context=ca.server_context())
        )
        assert origin.https is not None
        profile = PROFILES["strict-corporate"].config
        config = replace(
            profile,
            auth=(user, password),
            allow_ports=frozenset({443, origin.https[1]}),
        )
        proxy: RunningProxy = await nursery.start(serve_proxy, config)
        out(f"origin  tunnelws serve           {origin.ws_url()}  {origin.wss_url()}")
        out(f"        its test CA              {ca.ca_pem_path}")
        out(f"proxy   tunnelws proxy --profile strict-corporate   {proxy.url}")
        out(
            f"        Basic auth as {user!r}; CONNECT only to 443 and {origin.https[1]}"
            " (standing in for 443); Upgrade stripped; idle tunnels closed after 30 s"
        )
        proxy_with_auth = _with_credentials(proxy.url, user, password)
        results: list[bool] = []

        out("\n== 1. tunnelws check over ws:// (the proxy should refuse it) ==")
        refused = (await _check(origin.ws_url(), proxy_with_auth, ca, out)).failure
        results.append(
            refused is not None
            and refused.diagnosis is not None
            and refused.diagnosis.cause == "port-policy"
        )

        out("\n== 2. tunnelws check over wss:// (every step should pass) ==")
        passed = await _check(origin.wss_url(), proxy_with_auth, ca, out)
        results.append(passed.ok)

        out("\n== 3. an echo session with tunnelws connect ==")
        results.append(await _connect_session(origin.wss_url(), proxy.url, user, password, ca, out))

        out("\n== 4. the same through a real third-party proxy (pproxy, Basic auth) ==")
        peer = Pproxy(auth=(user, password))
        async with open_proxy(peer, directory=directory / "pproxy") as pproxy:
            results.append(
                await _echo_through(
                    origin.wss_url(), _with_credentials(pproxy.url, user, password), ca, out
                )
            )

        out("\n== 5. try it in a browser ==")
        out(f"  compatibility page  {origin.http_url('/')}")
        out(f"  over TLS            {origin.https_url('/')}  (trust {ca.ca_pem_path} first)")
        out("")
        failures = results.count(False)
        if failures:
            out(f"{failures} of {len(results)} parts did not go as expected.")
        else:
            out("Everything behaved as a corporate network would: ws:// refused with a")
            out("diagnosis, wss:// tunnelled end to end. The password never appeared above.")
        if keep:
            # The user asked to keep using this throwaway proxy, so they
            # need its generated password: said once, on request only.
            out(f"\n--keep: servers stay up; the demo proxies' password is {password!r}.")
            out("Ctrl-C to stop.")
            await _wait_for_stop_signal()
        nursery.cancel_scope.cancel()
    return 1 if failures else 0


async def _wait_for_stop_signal() -> None:
    """Until Ctrl-C or SIGTERM: a clean stop (exit 0), not a KeyboardInterrupt."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return


async def _check(url: str, proxy_url: str, ca: LocalCA, out: Out) -> CheckReport:
    out(f"$ tunnelws check {url} --proxy {_redacted(proxy_url)} --cacert {ca.ca_pem_path}")
    counter = iter(range(1, 100))

    def show(step: StepResult) -> None:
        for line in render_step(step, next(counter)):
            out(f"  {line}")

    options = CheckOptions(proxy=proxy_url, ssl_context=ca.client_context(), connect_timeout=5)
    report = await run_check(url, options, on_step=show)
    for line in render_conclusion(report):
        out(f"  {line}")
    return report


def _redacted(proxy_url: str) -> str:
    return re.sub(r"://([^:@/]+):[^@/]*@", r"://\1:***@", proxy_url)


async def _connect_session(
    url: str, proxy_url: str, user: str, password: str, ca: LocalCA, out: Out
) -> bool:
    """Run the real CLI, feeding it lines on stdin, and show what it prints."""
    typed = "\\n".join(SESSION_LINES) + "\\n"
    out(
        f"$ printf '{typed}' | tunnelws connect {url} --proxy {proxy_url}"
        f" --proxy-user {user}:*** --cacert {ca.ca_pem_path}"
    )
    argv = [
        sys.executable,
        "-m",
        "tunnelws",
        "connect",
        url,
        "--proxy",
        proxy_url,
        "--proxy-user",
        f"{user}:{password}",
        "--cacert",
        str(ca.ca_pem_path),
    ]
    stdin = ("\n".join(SESSION_LINES) + "\n").encode()
    with trio.move_on_after(CONNECT_SESSION_TIMEOUT):
        result = await trio.run_process(
            argv, stdin=stdin, capture_stdout=True, capture_stderr=True, check=False
        )
        lines = result.stdout.decode(errors="replace").splitlines()
        for line in lines:
            out(f"  {line}")
        for line in result.stderr.decode(errors="replace").splitlines():
            out(f"  (stderr) {line.replace(password, '***')}")
        out(f"  exit status {result.returncode}")
        return result.returncode == 0 and lines == list(SESSION_LINES)
    out(f"  no answer within {CONNECT_SESSION_TIMEOUT:g} s")
    return False


async def _echo_through(url: str, proxy_url: str, ca: LocalCA, out: Out) -> bool:
    message = "hello through pproxy"
    try:
        async with open_websocket(
            url,
            proxy=proxy_url,
            ssl_context=ca.client_context(),
            connect_timeout=10,
            trace=lambda line: out(f"  {line}") if line.startswith("* ") else None,
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
