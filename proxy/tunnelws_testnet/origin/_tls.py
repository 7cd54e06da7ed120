"""Throwaway certificate authority for TLS on loopback (a thin trustme wrapper)."""

from __future__ import annotations

import ssl
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

# trustme (the ``testnet`` extra) is imported when a CA is made, so the
# package imports without it and the commands can say what to install.
if TYPE_CHECKING:
    import trustme

#: Names every test certificate covers, so ``localhost``, IPv4 and IPv6
#: loopback all verify without extra arguments.
LOOPBACK_NAMES: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class LocalCA:
    """A certificate authority and one server certificate issued by it.

    All PEM files live in :attr:`directory`: ``ca.pem`` (the CA certificate to
    trust), ``server.pem`` (the server certificate followed by its chain) and
    ``server.key`` (the private key). Hand ``ca_pem_path`` to clients that take
    a file (``curl --cacert``, ``websocket-client``'s ``ca_certs``, Node's
    ``NODE_EXTRA_CA_CERTS``) and :meth:`client_context` to Python clients.
    """

    names: tuple[str, ...]
    directory: Path
    ca_pem_path: Path
    cert_pem_path: Path
    key_pem_path: Path
    _ca: trustme.CA
    _cert: trustme.LeafCert

    @property
    def ca_pem(self) -> bytes:
        """The CA certificate in PEM form."""
        return bytes(self._ca.cert_pem.bytes())

    def server_context(self) -> ssl.SSLContext:
        """A fresh server-side context presenting the issued certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._cert.configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A fresh client-side context that trusts only this CA (verification on)."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self._ca.configure_trust(context)
        return context

    def configure_trust(self, context: ssl.SSLContext) -> None:
        """Add this CA to an existing client context's trust store."""
        self._ca.configure_trust(context)

    def issue(self, names: Iterable[str], stem: str) -> tuple[Path, Path]:
        """Another server certificate from this CA, for ``names`` only (no
        loopback names): ``STEM.pem`` (with its chain) and ``STEM.key`` in
        :attr:`directory`. Returns (certificate, key) paths."""
        cert_path = self.directory / f"{stem}.pem"
        key_path = self.directory / f"{stem}.key"
        _write_leaf(self._ca.issue_cert(*names), cert_path, key_path)
        return cert_path, key_path


def _write_leaf(cert: trustme.LeafCert, cert_path: Path, key_path: Path) -> None:
    cert_path.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(key_path))
    key_path.chmod(0o600)


def make_test_ca(
    names: Iterable[str] = (), *, directory: str | Path | None = None, loopback: bool = True
) -> LocalCA:
    """Create a CA and a server certificate for loopback plus ``names``.

    ``names`` are extra DNS names or IP addresses (for example a LAN address so
    a phone can reach ``wss://``); ``localhost``, ``127.0.0.1`` and ``::1`` are
    included unless ``loopback`` is false (the certificate then covers exactly
    ``names``). The PEM files are written to ``directory`` (created if
    needed) or, when it is ``None``, to a new temporary directory that the
    caller owns.
    """
    all_names = tuple(dict.fromkeys((*(LOOPBACK_NAMES if loopback else ()), *names)))
    folder = Path(tempfile.mkdtemp(prefix="tunnelws-ca-")) if directory is None else Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    import trustme

    ca = trustme.CA(organization_name="tunnelws test CA")
    cert = ca.issue_cert(*all_names)
    ca_pem_path = folder / "ca.pem"
    cert_pem_path = folder / "server.pem"
    key_pem_path = folder / "server.key"
    ca.cert_pem.write_to_path(str(ca_pem_path))
    _write_leaf(cert, cert_pem_path, key_pem_path)
    return LocalCA(
        names=all_names,
        directory=folder,
        ca_pem_path=ca_pem_path,
        cert_pem_path=cert_pem_path,
        key_pem_path=key_pem_path,
        _ca=ca,
        _cert=cert,
    )
