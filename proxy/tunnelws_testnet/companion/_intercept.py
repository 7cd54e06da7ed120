"""TLS interception: terminate the client's TLS inside a CONNECT tunnel with a
certificate signed on the fly by the proxy's own CA, and open a verified TLS
connection onward, like a corporate TLS-inspecting proxy.

Only tunnels whose first byte is a TLS handshake record are intercepted; plain
``ws://`` tunnels are relayed as they are.
"""

from __future__ import annotations

import shutil
import ssl
import tempfile
from pathlib import Path

import trio

from ._streams import PrefixedStream

__all__ = ["CA_FILE_NAME", "InterceptCA", "InterceptFailed", "intercept_streams"]

CA_FILE_NAME = "tunnelws-proxy-ca.pem"
TLS_HANDSHAKE_RECORD = 0x16
_MAX_CACHED_HOSTS = 256


class InterceptFailed(Exception):
    """A TLS handshake on one side of an intercepted tunnel failed."""

    def __init__(self, side: str, detail: str) -> None:
        super().__init__(f"{side} TLS handshake failed: {detail}")
        self.side = side


class InterceptCA:
    """The proxy's CA: a fresh one per proxy run, its certificate written to
    ``ca_dir/tunnelws-proxy-ca.pem`` for clients that should trust it."""

    def __init__(self, ca_dir: Path | None = None) -> None:
        # Imported here: trustme (the ``testnet`` extra) is needed only to intercept.
        import trustme

        self._ca = trustme.CA(organization_name="tunnelws companion proxy")
        self._temporary = ca_dir is None
        self.directory = (
            Path(tempfile.mkdtemp(prefix="tunnelws-proxy-ca-")) if ca_dir is None else ca_dir
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        self.cert_path = self.directory / CA_FILE_NAME
        self._ca.cert_pem.write_to_path(str(self.cert_path))
        self._contexts: dict[str, ssl.SSLContext] = {}

    def cleanup(self) -> None:
        """Remove the CA directory if the proxy created it."""
        if self._temporary:
            shutil.rmtree(self.directory, ignore_errors=True)

    async def server_context(self, host: str) -> ssl.SSLContext:
        """A server context presenting a certificate for ``host`` (cached)."""
        context = self._contexts.get(host)
        if context is None:
            # Key generation takes milliseconds of CPU: keep it off the event loop.
            context = await trio.to_thread.run_sync(self._make_context, host)
            if len(self._contexts) >= _MAX_CACHED_HOSTS:
                self._contexts.clear()
            self._contexts[host] = context
        return context

    def _make_context(self, host: str) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ca.issue_cert(host).configure_cert(context)
        return context


async def intercept_streams(
    client: trio.abc.Stream,
    origin: trio.abc.Stream,
    host: str,
    ca: InterceptCA,
    onward_context: ssl.SSLContext,
    *,
    first_bytes: bytes,
    handshake_timeout: float,
) -> tuple[trio.abc.Stream, trio.abc.Stream, bool]:
    """Wrap both sides in TLS if the client starts a TLS handshake.

    Returns ``(client_side, origin_side, intercepted)``. ``first_bytes`` are
    tunnel bytes already read from the client. Raises :class:`InterceptFailed`.
    """
    client = PrefixedStream(client, first_bytes)
    if not first_bytes or first_bytes[0] != TLS_HANDSHAKE_RECORD:
        return client, origin, False
    client_tls = trio.SSLStream(
        client, await ca.server_context(host), server_side=True, https_compatible=True
    )
    origin_tls = trio.SSLStream(origin, onward_context, server_hostname=host, https_compatible=True)
    with trio.move_on_after(handshake_timeout) as scope:
        try:
            await origin_tls.do_handshake()
        except (trio.BrokenResourceError, ssl.SSLError) as exc:
            raise InterceptFailed("origin", str(exc.__cause__ or exc)) from None
        try:
            await client_tls.do_handshake()
        except (trio.BrokenResourceError, ssl.SSLError) as exc:
            raise InterceptFailed("client", str(exc.__cause__ or exc)) from None
    if scope.cancelled_caught:
        raise InterceptFailed("client or origin", "timed out")
    return client_tls, origin_tls, True
