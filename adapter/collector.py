"""Keeping the garbage collector's pauses out of a publication's delivery.

The sidecar leaves no reference cycles behind per connection or per Strapi request, so the cyclic
collector finds next to nothing; but it still runs whenever enough objects were allocated, and a
collection of the young generation walks every object made since the last one: with thousands of
clients connected since, 50-450 ms with the event loop stopped (measured with `gc.callbacks` while
10,000 benchmark clients were connected). A publication's webhook is what usually tips the count
over the threshold: its body has a dictionary per selected user. So from the parse of a webhook
until the notification it announces has been written to every recipient, collections wait; the
one that fell due meanwhile runs right after, when no delivery is waiting on it.

A hold is counted (holds overlap: a webhook parsed while another publication is delivered), and
never lasts more than `MAX_HOLD_SECONDS`: a delivery stuck on Redis must not switch the collector
off for good.

`pauses` times every collection of the process (`gc.callbacks`), by generation, for the
`sidecar_gc_pause_seconds` metric: what the event loop lost to the collector, and when.
"""

from __future__ import annotations

import asyncio
import bisect
import gc
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

__all__ = ["MAX_HOLD_SECONDS", "PAUSE_BUCKETS", "CollectorHold", "PauseLog", "collector", "pauses"]

logger = logging.getLogger(__name__)

MAX_HOLD_SECONDS = 5.0


class CollectorHold:
    """Counted holds on the cyclic garbage collector (process-wide, as the collector is)."""

    def __init__(self, max_seconds: float = MAX_HOLD_SECONDS) -> None:
        self._max_seconds = max_seconds
        self._holds = 0
        self._disabled_here = False  # the collector was on, and a hold turned it off
        self._expiry: asyncio.TimerHandle | None = None

    @property
    def held(self) -> bool:
        return self._holds > 0

    def acquire(self) -> None:
        if self._holds == 0 and gc.isenabled():
            gc.disable()
            self._disabled_here = True
            try:
                self._expiry = asyncio.get_running_loop().call_later(self._max_seconds, self._expire)
            except RuntimeError:  # no running loop: released synchronously by the caller
                self._expiry = None
        self._holds += 1

    def release(self) -> None:
        if self._holds == 0:
            return
        self._holds -= 1
        if self._holds == 0:
            self._resume()

    @contextmanager
    def holding(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()

    def _resume(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self._disabled_here:
            self._disabled_here = False
            gc.enable()

    def _expire(self) -> None:
        self._expiry = None
        if self._disabled_here:
            logger.warning(
                "garbage collection held for over %.0f s by a delivery; resumed", self._max_seconds
            )
            self._resume()


PAUSE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class PauseLog:
    """How long each collection stopped the process, by generation: per-bucket counts (a
    collection counts in the first bucket it fits, `buckets[i]` seconds or less; over the last:
    only in the total) and the summed seconds. One `gc.callbacks` hook, installed once."""

    def __init__(self, buckets: Sequence[float] = PAUSE_BUCKETS) -> None:
        self.buckets = tuple(buckets)
        self._started: float | None = None
        self._installed = False
        # generation -> [count per bucket..., count over the last], seconds
        self._counts: dict[int, list[int]] = {}
        self._seconds: dict[int, float] = {}

    def install(self) -> None:
        if not self._installed:
            self._installed = True
            gc.callbacks.append(self._on_collection)

    def snapshot(self) -> dict[int, tuple[list[int], float]]:
        """generation -> (cumulative counts, one per bucket then the total), seconds."""
        out = {}
        for generation, counts in sorted(self._counts.items()):
            cumulative, running = [], 0
            for count in counts:
                running += count
                cumulative.append(running)
            out[generation] = cumulative, self._seconds[generation]
        return out

    def _on_collection(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        if self._started is None:  # installed during a collection
            return
        seconds, self._started = time.perf_counter() - self._started, None
        generation = int(info.get("generation", 0))
        counts = self._counts.setdefault(generation, [0] * (len(self.buckets) + 1))
        counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self._seconds[generation] = self._seconds.get(generation, 0.0) + seconds


collector = CollectorHold()
pauses = PauseLog()
