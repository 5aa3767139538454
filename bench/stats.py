"""Small statistics helpers (no numpy)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import median

__all__ = ["median", "median_of", "percentile", "summary"]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median_of(values: Sequence[float | None], digits: int = 1) -> float | None:
    """The median of the values that are there (None left out), rounded; None if none is."""
    present = [value for value in values if value is not None]
    return round(median(present), digits) if present else None


def total_of(values: Sequence[float | None], digits: int = 1) -> float | None:
    """The sum of the values, rounded; None if any is missing (a figure not every round has)."""
    if any(value is None for value in values):
        return None
    return round(sum(value for value in values if value is not None), digits)


def summary(values: Sequence[float]) -> dict[str, float]:
    """min / p50 / p99 / max (and n) of a list of latencies, rounded to 0.01."""
    if not values:
        return {"n": 0, "min": math.nan, "p50": math.nan, "p99": math.nan, "max": math.nan}
    return {
        "n": len(values),
        "min": round(min(values), 2),
        "p50": round(percentile(values, 50), 2),
        "p99": round(percentile(values, 99), 2),
        "max": round(max(values), 2),
    }
