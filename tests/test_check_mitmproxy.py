"""``check`` against mitmproxy, a real TLS-intercepting proxy.

mitmproxy lives in its own virtualenv, ``.venv-mitmproxy`` (see
:mod:`tunnelws_testnet.peers`, ``make .venv-mitmproxy/.installed``). Without it
the test skips, or fails under CI=true.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import trio
import trustme

from peers import run_mitmdump
from tunnelws._check import CheckOptions, run_check
from tunnelws_testnet.origin import LocalCA, OriginAddresses
from tunnelws_testnet.peers import ProxyProcess

CORPORATE_CA_NAME = "Example Corp TLS Inspection"


@contextmanager
def mitmdump_with_corporate_ca(
    tmp_path: Path, origin_ca: Path
) -> Iterator[tuple[ProxyProcess, trustme.CA]]:
    """mitmdump signing with a corporate CA we generate, verifying origins
    against ``origin_ca``; yields it and the CA."""
    corporate = trustme.CA(organization_name=CORPORATE_CA_NAME)
    ca_pem = corporate.private_key_pem.bytes() + corporate.cert_pem.bytes()
    with run_mitmdump(tmp_path, ca_pem=ca_pem, upstream_ca=origin_ca) as proxy:
        yield proxy, corporate


async def test_mitmproxy_interception_is_detected(
    origin: OriginAddresses, test_ca: LocalCA, tmp_path: Path
) -> None:
    with mitmdump_with_corporate_ca(tmp_path, test_ca.ca_pem_path) as (proxy, _):
        options = CheckOptions(proxy=proxy.url, ssl_context=test_ca.client_context())
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
    with mitmdump_with_corporate_ca(tmp_path, test_ca.ca_pem_path) as (proxy, corporate):
        context = ssl.create_default_context()
        corporate.configure_trust(context)
        with trio.fail_after(60):
            report = await run_check(
                origin.wss_url(), CheckOptions(proxy=proxy.url, ssl_context=context)
            )
        # mitmproxy's log shows the handshake it decrypted, and its answer.
        assert origin.https is not None
        handshake = f"https://127.0.0.1:{origin.https[1]}/echo"
        await proxy.wait_for_access_log_async(f"GET {handshake}")
        assert ("GET", handshake, 101) in [(r.method, r.target, r.status) for r in proxy.requests()]
    assert report.ok, report.failure
    tls = report.step("tls")
    assert tls is not None and tls.status == "warn"
    assert tls.diagnosis is not None and tls.diagnosis.cause == "tls-intercepted-trusted"
    echo = report.step("echo")
    assert echo is not None and echo.status == "ok"  # WebSocket crosses mitmproxy intact
