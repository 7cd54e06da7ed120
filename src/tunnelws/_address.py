"""``HOST:PORT`` as people type it and as CONNECT carries it. Pure."""

from __future__ import annotations

from ._target import normalize_host

__all__ = ["parse_host_port"]


def parse_host_port(
    text: str, *, default_host: str | None = None, allow_port_zero: bool = False
) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` into ``(wire host, port)``; a bare
    ``PORT`` when ``default_host`` is given (``forward 8022 ...``).

    Raises :class:`ValueError` with a readable message.
    """
    text = text.strip()
    if text.isdigit() and default_host is not None:
        host, port_text = default_host, text
    elif text.startswith("["):
        close = text.find("]")
        if close < 0 or text[close + 1 : close + 2] != ":":
            raise ValueError(f"expected [IPv6]:PORT, got {text!r}")
        host, port_text = text[1:close], text[close + 2 :]
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon or ":" in host:
            raise ValueError(f"expected HOST:PORT (IPv6 in brackets), got {text!r}")
    low = 0 if allow_port_zero else 1
    if not port_text.isdigit() or not low <= int(port_text) <= 65535:
        raise ValueError(f"invalid port {port_text!r} in {text!r}")
    if not host:
        raise ValueError(f"missing host in {text!r}")
    return normalize_host(host), int(port_text)
