"""Per-caller limits: a token bucket of calls per second and a cap on concurrent streams.

Both answer RESOURCE_EXHAUSTED (`ResourceExhausted`), which clients do not retry blindly.
Limits count per API key, per client certificate, or per peer address for anonymous callers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from lmdock.common.errors import InvalidArgument, ResourceExhausted

__all__ = ["Limiter", "RateLimits"]

_MAX_TRACKED = 10_000  # callers remembered before idle buckets are dropped


@dataclass(frozen=True)
class RateLimits:
    calls_per_second: float = 50.0  # sustained rate per caller; 0 turns rate limiting off
    burst: int = 100  # calls a caller may make at once after being idle
    streams_per_caller: int = 4  # concurrent Download/Upload streams per caller; 0 = no cap

    def __post_init__(self) -> None:
        if self.calls_per_second < 0 or self.burst < 1 or self.streams_per_caller < 0:
            raise InvalidArgument("rate limits must be non-negative (burst at least 1)")


class Limiter:
    def __init__(self, limits: RateLimits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, last refill)
        self._streams: dict[str, int] = {}

    def admit(self, caller: str) -> None:
        """Take one token from the caller's bucket, or raise ResourceExhausted."""
        rate = self.limits.calls_per_second
        if rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            if len(self._buckets) > _MAX_TRACKED:
                self._forget_idle(now)
            tokens, last = self._buckets.get(caller, (float(self.limits.burst), now))
            tokens = min(float(self.limits.burst), tokens + (now - last) * rate)
            if tokens < 1.0:
                self._buckets[caller] = (tokens, now)
                raise ResourceExhausted(
                    f"rate limit of {rate:g} calls/s (burst {self.limits.burst}) exceeded; retry in "
                    f"{(1.0 - tokens) / rate:.2f}s"
                )
            self._buckets[caller] = (tokens - 1.0, now)

    def _forget_idle(self, now: float) -> None:
        full_after = self.limits.burst / self.limits.calls_per_second
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}

    @contextmanager
    def stream(self, caller: str) -> Iterator[None]:
        """Hold one of the caller's stream slots for the duration of a streaming call."""
        cap = self.limits.streams_per_caller
        with self._lock:
            open_now = self._streams.get(caller, 0)
            if cap and open_now >= cap:
                raise ResourceExhausted(
                    f"at most {cap} concurrent streams per caller; wait for one to finish"
                )
            self._streams[caller] = open_now + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._streams[caller] - 1
                if left:
                    self._streams[caller] = left
                else:
                    del self._streams[caller]
