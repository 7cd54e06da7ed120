"""The OS trust store is the default: a CA installed the way companies deploy
their interception CA (Debian: ``/usr/local/share/ca-certificates`` +
``update-ca-certificates``) is trusted for ``wss://`` and ``https://``
proxies without flags; ``--cacert`` adds to it.

These tests change the system store, so they need root and remove the CA
(and rebuild the store) afterwards, whatever happens.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trustme
import truststore  # noqa: F401  a core dependency: missing, the install is broken (fail, never skip)

import tunnelws
from companion_support import start_proxy
from conftest import skip_or_fail
from tunnelws._trust import default_ssl_context
from tunnelws._websocket import open_websocket
from tunnelws.cli._options import _context_trusting

SYSTEM_CA_DIR = Path("/usr/local/share/ca-certificates")


def _update_store(*, fresh: bool = False) -> None:
    # --fresh also drops the hash links of removed local CAs (a plain run
    # leaves them dangling).
    argv = ["update-ca-certificates", *(["--fresh"] if fresh else [])]
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def system_ca() -> Iterator[trustme.CA]:
    """A fresh CA installed in the system store for the test's duration."""
    if os.geteuid() != 0 or shutil.which("update-ca-certificates") is None:
        skip_or_fail("needs root and update-ca-certificates (Debian ca-certificates)")
    ca = trustme.CA(organization_name="tunnelws test corporate CA")
    path = SYSTEM_CA_DIR / f"tunnelws-test-{uuid.uuid4().hex}.crt"
    SYSTEM_CA_DIR.mkdir(parents=True, exist_ok=True)
    path.write_bytes(ca.cert_pem.bytes())
    try:
        _update_store()
        yield ca
    finally:
        path.unlink(missing_ok=True)
        _update_store(fresh=True)


async def start_tls_origin(nursery: trio.Nursery, ca: trustme.CA) -> str:
    """The origin test server with a certificate from ``ca``; its wss:// URL."""
    from tunnelws_testnet.origin import OriginConfig, serve_origin

    context = trustme_server_context(ca)
    origin = await nursery.start(serve_origin, OriginConfig(tls_port=0, ssl_context=context))
    url: str = origin.wss_url()
    return url


def trustme_server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


async def echo(url: str, **kwargs: object) -> str:
    async with open_websocket(url, connect_timeout=5, **kwargs) as ws:  # type: ignore[arg-type]
        await ws.send("trusted")
        with trio.fail_after(5):
            reply: str = await ws.receive()  # type: ignore[assignment]
            return reply


async def test_untrusted_ca_fails_before_installation(nursery: trio.Nursery) -> None:
    url = await start_tls_origin(nursery, trustme.CA())
    with pytest.raises(tunnelws.TLSError, match="could not be verified"):
        await echo(url, proxy=None)


async def test_system_ca_is_trusted_for_wss_without_flags(
    nursery: trio.Nursery, system_ca: trustme.CA
) -> None:
    url = await start_tls_origin(nursery, system_ca)
    assert await echo(url, proxy=None) == "trusted"


async def test_system_ca_is_trusted_for_an_https_proxy(
    nursery: trio.Nursery, system_ca: trustme.CA
) -> None:
    origin_ca = trustme.CA()
    url = await start_tls_origin(nursery, origin_ca)
    proxy = await start_proxy(nursery, ssl_context=trustme_server_context(system_ca))
    origin_context = default_ssl_context()
    origin_ca.configure_trust(origin_context)
    reply = await echo(url, proxy=f"https://127.0.0.1:{proxy.port}", ssl_context=origin_context)
    assert reply == "trusted"


async def test_cacert_adds_to_the_system_store(
    nursery: trio.Nursery, system_ca: trustme.CA, tmp_path: Path
) -> None:
    extra_ca = trustme.CA()
    cafile = tmp_path / "extra.pem"
    cafile.write_bytes(extra_ca.cert_pem.bytes())
    context = _context_trusting(str(cafile))
    assert context is not None
    system_url = await start_tls_origin(nursery, system_ca)
    extra_url = await start_tls_origin(nursery, extra_ca)
    # One context, both CAs: the file did not replace the system store.
    assert await echo(system_url, proxy=None, ssl_context=context) == "trusted"
    assert await echo(extra_url, proxy=None, ssl_context=context) == "trusted"
    assert _context_trusting(None) is None


def test_default_context_verifies() -> None:
    context = default_ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert type(context).__module__.startswith("truststore")
