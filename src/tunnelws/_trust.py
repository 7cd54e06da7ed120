"""Default TLS trust: the operating system's certificate store.

Companies deploy their TLS-intercepting proxy's CA into the OS store
(Windows certificate store, macOS keychain, ``update-ca-certificates`` on
Debian). truststore makes Python verify against that store on every platform,
so ``wss://`` through such a proxy works without flags. Without truststore
installed, Python's own default (OpenSSL's paths) is used.
"""

from __future__ import annotations

import ssl

__all__ = ["default_ssl_context"]


def default_ssl_context(cafile: str | None = None) -> ssl.SSLContext:
    """A client context verifying against the OS trust store, plus ``cafile``
    (PEM, added to the system CAs, not replacing them) when given."""
    try:
        import truststore
    except ImportError:  # pragma: no cover - truststore is a dependency
        context = ssl.create_default_context()
    else:
        context = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile is not None:
        context.load_verify_locations(cafile)
    return context
