"""Live counters a running proxy exposes to tests and the harness."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["ProxyStats"]


@dataclass
class ProxyStats:
    """Counters updated as the proxy works; read them at any time.

    Bytes are counted as delivered: ``bytes_up`` client -> origin,
    ``bytes_down`` origin -> client, over tunnels and forwarded requests.
    """

    connections: int = 0  # client connections accepted
    connections_open: int = 0
    requests: int = 0  # request heads parsed
    connects: int = 0  # CONNECT requests
    forwards: int = 0  # absolute-form or transparent requests forwarded
    absolute_form: int = 0  # absolute-form requests received (``GET http://...``)
    tunnels_open: int = 0
    tunnels_total: int = 0
    auth_challenges: int = 0  # 407s sent
    auth_rejected: int = 0  # credentials present but refused
    bad_requests: int = 0  # 400/431/408 for malformed heads
    intercepted: int = 0  # tunnels whose TLS the proxy terminated
    resets: int = 0  # tunnels ended with a TCP reset (toxics)
    idle_timeouts: int = 0
    responses_reset: int = 0  # forwarded responses cut mid-body (reset_responses)
    responses_buffered: int = 0  # forwarded responses held back (buffer_responses)
    internal_errors: int = 0  # unexpected exceptions while serving a client (see the log)
    bytes_up: int = 0
    bytes_down: int = 0
    statuses: Counter[int] = field(default_factory=Counter)  # every status the proxy sent
    targets: Counter[str] = field(default_factory=Counter)  # "host:port" per CONNECT/forward
