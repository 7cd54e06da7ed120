"""``check`` against mitmproxy, a real TLS-intercepting proxy.

mitmproxy lives in its own virtualenv (its pinned dependencies clash with
ours): ``python3 -m venv .venv-mitmproxy && .venv-mitmproxy/bin/pip install
'mitmproxy>=11,<12'``. Without it the test skips, or fails under CI=true.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio
import trustme

from conftest import IN_CI
from tunnelws._check import CheckOptions, run_check
from tunnelws_testnet.origin import LocalCA, OriginAddresses

MITMDUMP = Path(__file__).resolve().parent.parent / ".venv-mitmproxy" / "bin" / "mitmdump"
CORPORATE_CA_NAME = "Example Corp TLS Inspection"
START_TIMEOUT = 20.0


def _require_mitmdump() -> Path:
    if not MITMDUMP.exists():
        message = (
            f"{MITMDUMP} is missing: python3 -m venv .venv-mitmproxy &&"
            " .venv-mitmproxy/bin/pip install 'mitmproxy>=11,<12'"
        )
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return MITMDUMP


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


@contextmanager
def run_mitmdump(confdir: Path, origin_ca: Path) -> Iterator[tuple[str, trustme.CA]]:
    """mitmdump with a corporate CA we generate (``mitmproxy-ca.pem`` holds
    key and certificate), verifying origins against ``origin_ca``."""
    corporate = trustme.CA(organization_name=CORPORATE_CA_NAME)
    confdir.mkdir(parents=True, exist_ok=True)
    (confdir / "mitmproxy-ca.pem").write_bytes(
        corporate.private_key_pem.bytes() + corporate.cert_pem.bytes()
    )
    mitmdump = _require_mitmdump()
    for _ in range(3):  # the free port may be taken before mitmdump binds it
        port = _free_port()
        process = subprocess.Popen(
            [
                str(mitmdump),
                "--listen-host",
                "127.0.0.1",
                "--listen-port",
                str(port),
                "--set",
                f"confdir={confdir}",
                "--set",
                f"ssl_verify_upstream_trusted_ca={origin_ca}",
                "-q",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            for _ in range(int(START_TIMEOUT / 0.05)):
                if process.poll() is not None or _listening(port):
                    break
                time.sleep(0.05)
            if process.poll() is None and _listening(port):
                yield f"http://127.0.0.1:{port}", corporate
                return
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    raise RuntimeError("mitmdump did not start")


async def test_mitmproxy_interception_is_detected(
    origin: OriginAddresses, test_ca: LocalCA, tmp_path: Path
) -> None:
    with run_mitmdump(tmp_path / "mitm", test_ca.ca_pem_path) as (proxy_url, _):
        options = CheckOptions(proxy=proxy_url, ssl_context=test_ca.client_context())
        with trio.fail_after(60):
            report = await run_check(origin.wss_url(), options)
    failure = report.failure
    assert failure is not None and failure.name == "tls"
    assert failure.diagnosis is not None
    assert failure.diagnosis.cause == "tls-intercepted"
    assert CORPORATE_CA_NAME in failure.diagnosis.message
    # The comparison with the direct connection names the real issuer.
    assert "tunnelws test CA" in failure.diagnosis.message
    assert "--cacert" in failure.diagnosis.remedy
    assert report.exit_code == 9


async def test_mitmproxy_with_its_ca_trusted_passes_with_a_warning(
    origin: OriginAddresses, test_ca: LocalCA, tmp_path: Path
) -> None:
    with run_mitmdump(tmp_path / "mitm", test_ca.ca_pem_path) as (proxy_url, corporate):
        context = ssl.create_default_context()
        corporate.configure_trust(context)
        with trio.fail_after(60):
            report = await run_check(
                origin.wss_url(), CheckOptions(proxy=proxy_url, ssl_context=context)
            )
    assert report.ok, report.failure
    tls = report.step("tls")
    assert tls is not None and tls.status == "warn"
    assert tls.diagnosis is not None and tls.diagnosis.cause == "tls-intercepted-trusted"
    echo = report.step("echo")
    assert echo is not None and echo.status == "ok"  # WebSocket crosses mitmproxy intact
