"""Faults injected on a tunnel's relay, in the spirit of toxiproxy's toxics.

This module holds the configuration and the pure pieces (seeded slicing, the
bandwidth token bucket, the reset dice); :mod:`._relay` applies them while it
moves bytes. Everything is in user space because ``tc netem`` is unavailable.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Slicer", "TokenBucket", "Toxics"]


@dataclass(frozen=True)
class Toxics:
    """Faults on every tunnel (and forwarded request). All off by default.

    Attributes:
        latency_up: seconds added to every chunk going client -> origin.
        latency_down: seconds added to every chunk going origin -> client.
        bandwidth: bytes per second per direction (None = unlimited).
        slice_min / slice_max: cut each write into pieces of a random size in
            this range (both set, or neither).
        seed: seed for slicing and random resets (None = a random seed).
        reset_after_bytes: reset (TCP RST both ways) once this many tunnel
            bytes have been relayed, counting both directions.
        reset_after_seconds: reset the tunnel this long after it opened.
        reset_chance: probability, per relayed chunk, of resetting the tunnel.
        idle_timeout: close a tunnel (FIN both ways) with no bytes moving for this long.
        max_lifetime: close a tunnel this long after it opened, busy or not.
    """

    latency_up: float = 0.0
    latency_down: float = 0.0
    bandwidth: int | None = None
    slice_min: int | None = None
    slice_max: int | None = None
    seed: int | None = None
    reset_after_bytes: int | None = None
    reset_after_seconds: float | None = None
    reset_chance: float = 0.0
    idle_timeout: float | None = None
    max_lifetime: float | None = None

    def __post_init__(self) -> None:
        if (self.slice_min is None) != (self.slice_max is None):
            raise ValueError("slice_min and slice_max go together")
        if (
            self.slice_min is not None
            and self.slice_max is not None
            and not 1 <= self.slice_min <= self.slice_max
        ):
            raise ValueError("need 1 <= slice_min <= slice_max")
        if self.bandwidth is not None and self.bandwidth <= 0:
            raise ValueError("bandwidth must be positive")
        if self.latency_up < 0 or self.latency_down < 0:
            raise ValueError("latency must not be negative")
        if not 0.0 <= self.reset_chance <= 1.0:
            raise ValueError("reset_chance is a probability")


class Slicer:
    """Cuts chunks into seeded random pieces of ``low..high`` bytes."""

    def __init__(self, low: int, high: int, rng: random.Random) -> None:
        self.low, self.high, self._rng = low, high, rng

    def pieces(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        position = 0
        while position < len(data):
            size = self._rng.randint(self.low, self.high)
            out.append(data[position : position + size])
            position += size
        return out


class TokenBucket:
    """Bandwidth limiter: how long to wait before sending ``n`` more bytes.

    The burst is a tenth of a second's worth of bytes (at least one), so the
    rate holds over short transfers too.
    """

    def __init__(self, rate: int, now: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate / 10)
        self._tokens = self.capacity
        self._stamp = now

    def delay_for(self, n: int, now: float) -> float:
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= n
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    @property
    def max_piece(self) -> int:
        return max(1, int(self.capacity))
