"""The HTTP fallback protocol's wire format and delivery windows, public.

The names servers need to implement ``docs/fallback-protocol.md`` (the test
network's origin server and gateway use them): everything
``tunnelws._fallback_wire`` exports, the one implementation the client
shares.
"""

from __future__ import annotations

from . import _fallback_wire
from ._fallback_wire import *  # noqa: F403

__all__ = list(_fallback_wire.__all__)
