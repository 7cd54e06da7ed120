"""The harness's client contract, shared by the Python adapters.

The harness runs an adapter with ``TUNNELWS_URL`` (the ``ws://``/``wss://``
echo URL), ``TUNNELWS_MESSAGE`` (what to send; repeated
``TUNNELWS_MESSAGE_REPEAT`` times when set, because one environment variable
cannot hold a large message on Linux), ``TUNNELWS_CONNECT_TIMEOUT`` (seconds
to allow for connecting, handed to the library's own timeout option) and
optionally ``TUNNELWS_IDLE`` (seconds to stay idle, listening, after the first echo before
sending the message once more), plus the proxy and CA variables of the
scenario. The adapter prints each echo on its own line and exits 0, or prints
the client library's error on stderr and exits 1. Proxy and CA variables are
left for the client library to read: measuring what it does with them is the
point. Where a library has a documented option for a setting but does not
read it from the environment, the adapter passes it that way and says so on
stderr (:func:`translated`), before connecting.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import NoReturn
from urllib.parse import urlsplit

#: Every adapter gives up after this many seconds (plus the idle wait).
DEADLINE = 20.0
#: Seconds to allow for connecting when the harness gives no hint.
CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Contract:
    url: str
    message: str
    idle: float
    connect_timeout: float = CONNECT_TIMEOUT

    @property
    def rounds(self) -> int:
        return 2 if self.idle > 0 else 1

    @property
    def deadline(self) -> float:
        return DEADLINE + self.idle


def read_contract(name: str) -> Contract:
    url = os.environ.get("TUNNELWS_URL", "")
    if not url:
        fail(name, "TUNNELWS_URL is not set")
    try:
        idle = float(os.environ.get("TUNNELWS_IDLE", "0") or 0)
    except ValueError:
        fail(name, "TUNNELWS_IDLE must be a number of seconds")
    try:
        connect_timeout = float(os.environ.get("TUNNELWS_CONNECT_TIMEOUT", "") or CONNECT_TIMEOUT)
    except ValueError:
        fail(name, "TUNNELWS_CONNECT_TIMEOUT must be a number of seconds")
    try:
        repeat = int(os.environ.get("TUNNELWS_MESSAGE_REPEAT", "1") or 1)
    except ValueError:
        fail(name, "TUNNELWS_MESSAGE_REPEAT must be a whole number")
    if repeat < 1:
        fail(name, "TUNNELWS_MESSAGE_REPEAT must be at least 1")
    message = os.environ.get("TUNNELWS_MESSAGE", "hello") * repeat
    return Contract(url=url, message=message, idle=idle, connect_timeout=connect_timeout)


def scheme_proxy(url: str) -> tuple[str, str]:
    """(variable, proxy URL) as a user's own code typically picks it:
    ``https_proxy`` for ``wss://``, ``http_proxy`` for ``ws://``, lower case
    first; no ``ALL_PROXY``, no ``no_proxy``. ("", "") when unset."""
    name = "https_proxy" if urlsplit(url).scheme == "wss" else "http_proxy"
    for variable in (name, name.upper()):
        if os.environ.get(variable):
            return variable, os.environ[variable]
    return "", ""


def translated(name: str, what: str) -> None:
    """Say (on stderr, never with a value: it may hold a password) which
    setting the adapter passed to the library as its own option. The
    matrix marks the cell."""
    print(f"{name}: translated: {what}", file=sys.stderr, flush=True)


def echoed(text: str | bytes) -> None:
    """Print one echo (bytes decoded as UTF-8) and flush at once."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    print(text, flush=True)


def fail(name: str, error: BaseException | str) -> NoReturn:
    """Report the library's own error (type and message) and exit 1."""
    if isinstance(error, BaseException):
        error = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    print(f"{name}: {error}", file=sys.stderr, flush=True)
    raise SystemExit(1)
