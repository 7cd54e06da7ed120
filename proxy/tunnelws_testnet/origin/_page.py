"""``/`` and ``/config``: the browser compatibility page and what it needs to know."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from ._config import OriginAddresses


@cache
def page_html() -> bytes:
    """The self-contained page (package data, no external resources)."""
    return resources.files(__package__).joinpath("page.html").read_bytes()


def page_config(addresses: OriginAddresses) -> dict[str, Any]:
    """Ports the page tests; it combines them with the host it was loaded from."""
    return {
        "server": "tunnelws origin test server",
        "http_port": addresses.http[1],
        "https_port": addresses.https[1] if addresses.https else None,
    }
