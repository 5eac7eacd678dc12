"""Limits on what callers may hold: a token bucket of calls per second per caller, and caps on
concurrent streams (per caller and over all callers) with idle and total time limits.

A refusal answers RESOURCE_EXHAUSTED (`ResourceExhausted`), which clients do not retry blindly;
a stream past its time limit is ended with DEADLINE_EXCEEDED (by `server/interceptor.py`).
Limits count per API key, per client certificate, or per peer address for anonymous callers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from lmdock.common.errors import InvalidArgument, ResourceExhausted

__all__ = ["Limiter", "RateLimits", "StreamLimits"]

_MAX_TRACKED = 10_000  # callers remembered before idle buckets are dropped


@dataclass(frozen=True)
class RateLimits:
    calls_per_second: float = 50.0  # sustained rate per caller; 0 turns rate limiting off
    burst: int = 100  # calls a caller may make at once after being idle

    def __post_init__(self) -> None:
        if self.calls_per_second < 0 or self.burst < 1:
            raise InvalidArgument("rate limits must be non-negative (burst at least 1)")


@dataclass(frozen=True)
class StreamLimits:
    """Download/Upload streams. A stalled stream holds no worker thread (the market runs on
    grpc.aio), only a slot: `total` stays below the server's cap on concurrent RPCs, so
    unary calls always find room, and the time limits free a slot a stalled caller holds."""

    per_caller: int = 4  # concurrent streams per caller; 0 = no cap
    total: int = 32  # concurrent streams over all callers; 0 = no cap
    idle_seconds: float = 30.0  # longest wait for the next message, read or written
    max_seconds: float = 1800.0  # longest a stream may stay open (a 2 GiB package at ~1.2 MB/s)

    def __post_init__(self) -> None:
        if self.per_caller < 0 or self.total < 0 or not (0 < self.idle_seconds <= self.max_seconds):
            raise InvalidArgument("stream limits must be non-negative, with 0 < idle_seconds <= max_seconds")


class Limiter:
    def __init__(self, limits: RateLimits, streams: StreamLimits | None = None) -> None:
        self.limits = limits
        self.streams = streams or StreamLimits()
        self._open = 0  # streams open over all callers
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
        """Hold one of the caller's stream slots, and one of the market's, for a streaming call."""
        cap, total = self.streams.per_caller, self.streams.total
        with self._lock:
            open_now = self._streams.get(caller, 0)
            if cap and open_now >= cap:
                raise ResourceExhausted(
                    f"at most {cap} concurrent streams per caller; wait for one to finish"
                )
            if total and self._open >= total:
                raise ResourceExhausted(f"the market is serving its limit of {total} streams; retry later")
            self._streams[caller] = open_now + 1
            self._open += 1
        try:
            yield
        finally:
            with self._lock:
                self._open -= 1
                left = self._streams[caller] - 1
                if left:
                    self._streams[caller] = left
                else:
                    del self._streams[caller]
