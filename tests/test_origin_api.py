"""Public helpers of tunnelws_testnet.origin: addresses, config checks, test CA."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trio
import trio.testing

from tunnelws_testnet.origin import LOOPBACK_NAMES, OriginAddresses, OriginConfig, make_test_ca


def test_urls_bracket_ipv6_and_need_a_tls_port_for_wss() -> None:
    addresses = OriginAddresses(http=("::1", 8000), https=("::1", 8443))
    assert addresses.ws_url() == "ws://[::1]:8000/echo"
    assert addresses.wss_url("/info") == "wss://[::1]:8443/info"
    assert addresses.http_url("/timestamp") == "http://[::1]:8000/timestamp"
    plain = OriginAddresses(http=("127.0.0.1", 8000))
    assert plain.ws_url("/info") == "ws://127.0.0.1:8000/info"
    with pytest.raises(ValueError, match="no TLS listener"):
        plain.wss_url()


def test_tls_port_needs_a_context() -> None:
    with pytest.raises(ValueError, match="ssl_context"):
        OriginConfig(tls_port=0)


def test_make_test_ca_writes_files_and_covers_names(tmp_path: Path) -> None:
    ca = make_test_ca(["origin.test", "10.1.2.3", "localhost"], directory=tmp_path / "ca")
    assert ca.names == (*LOOPBACK_NAMES, "origin.test", "10.1.2.3")  # no duplicates
    assert ca.ca_pem_path.read_bytes() == ca.ca_pem
    assert b"BEGIN CERTIFICATE" in ca.cert_pem_path.read_bytes()
    assert b"PRIVATE KEY" in ca.key_pem_path.read_bytes()
    assert ca.key_pem_path.stat().st_mode & 0o077 == 0
    # The files work on their own, as other programs would use them.
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(ca.cert_pem_path, ca.key_pem_path)
    client = ssl.create_default_context(cafile=str(ca.ca_pem_path))
    assert client.verify_mode is ssl.CERT_REQUIRED


@pytest.mark.parametrize("name", ["origin.test", "127.0.0.1", "::1"])
async def test_certificate_verifies_for_each_name(name: str) -> None:
    ca = make_test_ca(["origin.test"])
    server_context = ca.server_context()
    client_context = ca.client_context()
    server_stream, client_stream = trio.testing.memory_stream_pair()
    server = trio.SSLStream(server_stream, server_context, server_side=True)
    client = trio.SSLStream(client_stream, client_context, server_hostname=name)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.do_handshake)
            nursery.start_soon(client.do_handshake)
    assert client.getpeercert() is not None
