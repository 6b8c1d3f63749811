"""Timing loops shared by the in-process measurements."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Timings:
    """Seconds per call of many calls, and the process's CPU seconds (every thread) over the same calls."""

    seconds: np.ndarray
    cpu_s: float = float("nan")

    @property
    def calls(self) -> int:
        return len(self.seconds)

    @property
    def total_s(self) -> float:
        return float(self.seconds.sum())

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.seconds, q) * 1000)

    def cpu_ms_per(self, items_per_call: int = 1) -> float:
        """Core-milliseconds per item: an engine's worker threads count, so two busy cores for 1 ms are 2."""
        return self.cpu_s * 1000 / (self.calls * items_per_call)


def repeat(call: Callable[[int], object], seconds: float, min_calls: int, warmup_calls: int = 2) -> Timings:
    """Calls call(i) for i = 0, 1, ... until both seconds and min_calls are reached; warm-up calls not counted."""
    for i in range(warmup_calls):
        call(i)
    times = []
    cpu_start = time.process_time()
    deadline = time.perf_counter() + seconds
    i = 0
    while i < min_calls or time.perf_counter() < deadline:
        start = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - start)
        i += 1
    return Timings(np.asarray(times), time.process_time() - cpu_start)
