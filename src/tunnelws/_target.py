"""Parsing the URL a client wants to reach into the parts every layer needs.

Pure and dependency-free: ``ws://``, ``wss://``, ``http://`` and ``https://``
URLs become a :class:`Target` with the host in its wire form (IDNA A-label for
names, bare address for IP literals), the effective port and the resource.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

import idna

__all__ = ["DEFAULT_PORTS", "Target", "format_authority", "normalize_host", "parse_target"]

DEFAULT_PORTS = {"ws": 80, "wss": 443, "http": 80, "https": 443}
SECURE_SCHEMES = frozenset({"wss", "https"})


def normalize_host(host: str) -> str:
    """Return ``host`` as it goes on the wire: IP literals unbracketed and
    canonical, names lower-cased in IDNA (punycode) form without a trailing dot.

    Raises :class:`ValueError` for something that is neither.
    """
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.ip_address(bare.split("%", 1)[0]))
    except ValueError:
        pass
    name = bare.rstrip(".")
    if not name:
        raise ValueError(f"empty host name in {host!r}")
    try:
        return idna.encode(name, uts46=True).decode("ascii").lower()
    except idna.IDNAError as exc:
        # Names that IDNA 2008 rejects but that are still valid DNS labels
        # (underscores in internal names, for instance) are sent as given.
        if name.isascii() and all(c.isalnum() or c in "-_." for c in name):
            return name.lower()
        raise ValueError(f"invalid host name {host!r}: {exc}") from None


def format_authority(host: str, port: int) -> str:
    """``host:port`` with IPv6 literals bracketed, as in CONNECT and Host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class Target:
    """Where a connection goes: scheme, wire host, port and resource."""

    scheme: str
    host: str
    port: int
    resource: str

    @property
    def secure(self) -> bool:
        return self.scheme in SECURE_SCHEMES

    @property
    def authority(self) -> str:
        return format_authority(self.host, self.port)

    @property
    def host_header(self) -> str:
        """The ``Host`` header value: the port only when it is not the default."""
        if self.port == DEFAULT_PORTS[self.scheme]:
            return f"[{self.host}]" if ":" in self.host else self.host
        return self.authority

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host_header}{self.resource}"


def parse_target(url: str) -> Target:
    """Parse a ``ws``/``wss``/``http``/``https`` URL into a :class:`Target`.

    Raises :class:`ValueError` with a readable message for anything else.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"unsupported URL scheme {parts.scheme!r} in {url!r}: use ws:// or wss://")
    if not parts.hostname:
        raise ValueError(f"URL {url!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials in a WebSocket URL are not supported; use extra headers")
    host = normalize_host(parts.hostname)
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    return Target(scheme, host, port if port is not None else DEFAULT_PORTS[scheme], resource)
