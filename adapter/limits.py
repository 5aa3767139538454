"""Abuse limits: token buckets for client events, and a throttle on failed handshakes per address."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["FailureThrottle", "RateLimiter"]

MAX_KEYS = 100_000

Clock = Callable[[], float]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Per-key token buckets: `per_minute` events on average, bursts of `burst`."""

    def __init__(self, per_minute: int, burst: int, clock: Clock = time.monotonic):
        self._rate = per_minute / 60.0
        self._burst = float(max(burst, 1))
        self._clock = clock
        self._buckets: OrderedDict[object, _Bucket] = OrderedDict()

    def allow(self, key: object) -> bool:
        """Take one token for `key`; False when its bucket is empty (the event is refused)."""
        if self._rate <= 0:
            return True
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self._burst, now)
            while len(self._buckets) > MAX_KEYS:
                self._buckets.popitem(last=False)
        else:
            bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
            bucket.updated = now
            self._buckets.move_to_end(key)
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True

    def forget(self, key: object) -> None:
        self._buckets.pop(key, None)


class FailureThrottle:
    """Counts failures per key in a sliding minute; `blocked` once there were `per_minute`."""

    def __init__(self, per_minute: int, clock: Clock = time.monotonic):
        self._limit = per_minute
        self._clock = clock
        self._failures: OrderedDict[str, list[float]] = OrderedDict()

    def blocked(self, key: str) -> bool:
        if self._limit <= 0:
            return False
        return len(self._recent(key)) >= self._limit

    def failed(self, key: str) -> None:
        if self._limit <= 0:
            return
        recent = self._recent(key)
        recent.append(self._clock())
        self._failures[key] = recent
        self._failures.move_to_end(key)
        while len(self._failures) > MAX_KEYS:
            self._failures.popitem(last=False)

    def _recent(self, key: str) -> list[float]:
        horizon = self._clock() - 60.0
        return [at for at in self._failures.get(key, []) if at > horizon]
