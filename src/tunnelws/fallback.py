"""The HTTP fallback protocol's wire format and delivery windows, public.

The names servers need to implement ``docs/fallback-protocol.md`` (the test
network's origin server and gateway use them); the implementation is
``tunnelws._fallback_wire``, shared with the client.
"""

from __future__ import annotations

from ._fallback_wire import (
    FALLBACK_VERSION,
    PATH_MARKER,
    Ack,
    End,
    FallbackMessage,
    FallbackPath,
    FallbackProtocolError,
    Heartbeat,
    ReceiveWindow,
    SendWindow,
    SessionLimits,
    UpstreamBatch,
    decode_down_event,
    decode_upstream,
    encode_ack_event,
    encode_end_event,
    encode_heartbeat,
    encode_message_event,
    encode_upstream,
    fallback_path,
    parse_fallback_path,
)

__all__ = [
    "FALLBACK_VERSION",
    "PATH_MARKER",
    "Ack",
    "End",
    "FallbackMessage",
    "FallbackPath",
    "FallbackProtocolError",
    "Heartbeat",
    "ReceiveWindow",
    "SendWindow",
    "SessionLimits",
    "UpstreamBatch",
    "decode_down_event",
    "decode_upstream",
    "encode_ack_event",
    "encode_end_event",
    "encode_heartbeat",
    "encode_message_event",
    "encode_upstream",
    "fallback_path",
    "parse_fallback_path",
]
