"""Argument types the test network's commands share."""

from __future__ import annotations

import argparse

__all__ = ["fraction", "host_port", "ports", "positive"]


def host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 in brackets); an empty host is 127.0.0.1."""
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def ports(text: str) -> frozenset[int]:
    try:
        values = frozenset(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ports, got {text!r}") from None
    if not values or any(not 0 < p < 65536 for p in values):
        raise argparse.ArgumentTypeError(f"invalid port list {text!r}")
    return values


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def fraction(text: str) -> float:
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("a fraction between 0 and 1")
    return value


def positive(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value
