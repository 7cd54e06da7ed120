"""``no_proxy`` rules: which hosts bypass a proxy found in the environment.

Parsed once with :meth:`NoProxyRules.parse`, matched many times with
:meth:`NoProxyRules.match`. Pure: host names are compared as text (in IDNA
form), never resolved, so matching cannot block or leak lookups.

Entry forms (separated by commas and/or whitespace, case-insensitive):

- ``*`` as an entry of its own: every host.
- ``example.com``, ``.example.com``, ``*.example.com``: that name and every
  subdomain, on label boundaries (``badexample.com`` does not match).
- ``192.0.2.7``, ``2001:db8::1``, ``[2001:db8::1]``: that IP literal exactly.
- ``10.0.0.0/8``, ``fd00::/8``: IP-literal hosts inside the network.
- Any of the above (except CIDR and ``*``) with ``:port`` (``[v6]:port`` for
  IPv6): only that port.

Entries that fit none of these are ignored, and listed in
:attr:`NoProxyRules.ignored` with the reason so ``resolve -v`` can show them.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import TypeAlias

from ._target import normalize_host

__all__ = ["NoProxyRules"]

IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

_SEPARATORS = re.compile(r"[,\s]+")
_PORT_RE = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True)
class _Entry:
    """One parsed entry. Exactly one of ``everything``/``name``/``network`` is set."""

    text: str
    everything: bool = False
    name: str | None = None  # IDNA form, no leading/trailing dots
    network: IPNetwork | None = None  # a single address is a /32 or /128
    port: int | None = None

    def matches(self, name: str | None, address: IPAddress | None, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.everything:
            return True
        if self.name is not None:
            # Label boundary: equal, or a proper subdomain ("x." + name).
            return name is not None and (name == self.name or name.endswith("." + self.name))
        return address is not None and self.network is not None and address in self.network


class NoProxyRules:
    """A parsed ``no_proxy`` value."""

    __slots__ = ("_entries", "ignored")

    def __init__(self, entries: tuple[_Entry, ...], ignored: tuple[tuple[str, str], ...]) -> None:
        self._entries = entries
        #: ``(entry, reason)`` for every entry that was not understood.
        self.ignored = ignored

    @classmethod
    def parse(cls, value: str) -> NoProxyRules:
        """Parse a ``no_proxy`` value. Never raises: bad entries are ignored."""
        entries: list[_Entry] = []
        ignored: list[tuple[str, str]] = []
        for text in _SEPARATORS.split(value):
            if not text:
                continue
            try:
                entries.append(_parse_entry(text))
            except ValueError as exc:
                ignored.append((text, str(exc)))
        return cls(tuple(entries), tuple(ignored))

    @property
    def entries(self) -> tuple[str, ...]:
        """The understood entries, as written, in order."""
        return tuple(entry.text for entry in self._entries)

    def match(self, host: str, port: int) -> str | None:
        """Return the first entry (as written) that sends ``host:port``
        direct, or ``None`` when the proxy should be used."""
        name, address = _classify_host(host)
        for entry in self._entries:
            if entry.matches(name, address, port):
                return entry.text
        return None

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __repr__(self) -> str:
        return f"NoProxyRules({','.join(self.entries)!r})"


def _classify_host(host: str) -> tuple[str | None, IPAddress | None]:
    """Split a host into (IDNA name, None) or (None, IP address)."""
    try:
        wire = normalize_host(host)
    except ValueError:
        wire = host.strip("[]").rstrip(".").lower()
    try:
        return None, ipaddress.ip_address(wire)
    except ValueError:
        return wire, None


def _parse_port(text: str) -> int:
    if _PORT_RE.fullmatch(text) and 1 <= int(text) <= 65535:
        return int(text)
    raise ValueError(f"bad port {text!r}")


def _parse_entry(text: str) -> _Entry:
    """Parse one entry; ``ValueError`` (with the reason) if it fits no form."""
    entry = text.lower()
    if entry == "*":
        return _Entry(text, everything=True)

    if entry.startswith("["):
        close = entry.find("]")
        if close < 0:
            raise ValueError("unclosed '['")
        rest = entry[close + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError("unexpected text after ']'")
        address = ipaddress.ip_address(entry[1:close])  # ValueError if not an IP
        if address.version != 6:
            raise ValueError("brackets are only for IPv6 addresses")
        port = _parse_port(rest[1:]) if rest else None
        return _Entry(text, network=ipaddress.ip_network(address), port=port)

    if "/" in entry:
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError("not a valid CIDR network") from None
        return _Entry(text, network=network)

    # A bare IPv6 literal contains colons, so try IPs before splitting a port.
    try:
        return _Entry(text, network=ipaddress.ip_network(ipaddress.ip_address(entry)))
    except ValueError:
        pass

    port = None
    if entry.count(":") == 1:
        entry, port_text = entry.split(":")
        port = _parse_port(port_text)
    elif ":" in entry:
        raise ValueError("not an IPv6 address (use [addr]:port for a port)")

    wildcard = entry.startswith(("*.", "."))
    name = entry[2:] if entry.startswith("*.") else entry[1:] if wildcard else entry
    if "*" in name:
        raise ValueError("'*' is only allowed alone or as a leading '*.'")
    if not name.rstrip("."):
        raise ValueError("empty name")
    try:
        wire = normalize_host(name)
    except ValueError:
        raise ValueError("not a valid host name") from None
    try:
        address = ipaddress.ip_address(wire)
    except ValueError:
        if "" in wire.split("."):
            raise ValueError("empty label in name") from None
        return _Entry(text, name=wire, port=port)
    if wildcard:
        raise ValueError("a leading '.' or '*.' does not apply to IP addresses")
    return _Entry(text, network=ipaddress.ip_network(address), port=port)
