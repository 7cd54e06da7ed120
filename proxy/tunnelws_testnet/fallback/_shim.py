"""``tunnelws.js``: the browser shim, package data served as it is."""

from __future__ import annotations

from functools import cache
from importlib import resources

__all__ = ["SHIM_PATH", "shim_js"]

#: Where the origin server and the gateway serve it.
SHIM_PATH = "/tunnelws.js"


@cache
def shim_js() -> bytes:
    return resources.files(__package__).joinpath("tunnelws.js").read_bytes()
