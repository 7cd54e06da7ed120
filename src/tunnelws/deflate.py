"""permessage-deflate (RFC 7692), public: the negotiation rules and the
bounded codec a WebSocket server needs (the test network's origin server
uses them), the one implementation the client shares.

:class:`Deflate`
    Compression settings (also ``open_websocket(compression=...)``).
:func:`accept_offer` / :class:`DeflateParameters`
    A server's choice for one client offer, and its ``header_value()``.
:class:`Deflater` / :class:`Inflater`
    Whole-message compression for one direction; the inflater stops at a
    size limit (:class:`TooBig`) and rejects bad data (:class:`InflateError`).
"""

from __future__ import annotations

from . import _deflate
from ._deflate import *  # noqa: F403

__all__ = list(_deflate.__all__)
