"""Timing loops shared by the in-process measurements."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Timings:
    """Seconds per call of many calls."""

    seconds: np.ndarray

    @property
    def calls(self) -> int:
        return len(self.seconds)

    @property
    def total_s(self) -> float:
        return float(self.seconds.sum())

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.seconds, q) * 1000)


def repeat(call: Callable[[int], object], seconds: float, min_calls: int, warmup_calls: int = 2) -> Timings:
    """Calls call(i) for i = 0, 1, ... until both seconds and min_calls are reached; warm-up calls not counted."""
    for i in range(warmup_calls):
        call(i)
    times = []
    deadline = time.perf_counter() + seconds
    i = 0
    while i < min_calls or time.perf_counter() < deadline:
        start = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - start)
        i += 1
    return Timings(np.asarray(times))
