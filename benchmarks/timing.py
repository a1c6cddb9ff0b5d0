"""Shared by the benchmark scripts: seconds per step over a list of batches."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence


def seconds_per_step(step: Callable, batches: Sequence, warm: int = 10) -> float:
    """Run ``step(batch)`` on every batch; the first ``warm`` are untimed (allocation, caches,
    compilation); return the mean seconds of the others."""
    warm = min(warm, len(batches) - 1)
    for b in batches[:warm]:
        step(b)
    t0 = time.perf_counter()
    for b in batches[warm:]:
        step(b)
    return (time.perf_counter() - t0) / (len(batches) - warm)
