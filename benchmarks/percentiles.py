"""Percentiles of benchmark samples, one definition for every benchmark that prints a p90, p95 or p99.

Nearest rank: the smallest sample with at least q% of the samples at or below it. It is always a measured
value, never below the median, and at small sample counts it is the largest sample, which is what a tail
figure from a few repeats can honestly say. (``samples[int(0.9 * (n - 1))]`` had rounded down: with 2 repeats
the "p90" was the faster run, below the median.)
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["percentile"]


def percentile(samples: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0 < q <= 100) of ``samples`` by nearest rank; NaN when there are none."""
    if not 0 < q <= 100:
        raise ValueError(f"percentile {q} is outside (0, 100]")
    ordered = sorted(samples)
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]
