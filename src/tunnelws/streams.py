"""Stream helpers of the connection path, public for code that moves tunnel
bytes itself (the companion test proxy does).

:class:`PrefixedStream`
    A trio stream that first returns bytes already read from the stream it
    wraps, then reads from it. A proxy may send the first tunnel bytes in
    the same segment as its ``200`` reply (and a client its first bytes right
    behind a request head); those belong to the stream.

:func:`prefixed`
    ``prefixed(stream, leftover)``: ``stream`` with ``leftover`` in front, or
    ``stream`` itself when there is nothing left over.

:func:`can_half_close`
    Whether ``stream`` (under any :class:`PrefixedStream`) can send an EOF
    and keep reading: a relay passes a peer's half-close on only then.
"""

from __future__ import annotations

from ._pipe import can_half_close
from ._transport import PrefixedStream, prefixed

__all__ = ["PrefixedStream", "can_half_close", "prefixed"]
