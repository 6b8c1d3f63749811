"""Which request path a loaded model gets: direct (decode and run on one thread) or batched (the micro-batcher).

Batching pays only where the engine runs a batch faster per image than single images (a GPU, or an fp32 model on
some CPUs). Measured on a 2-core Zen 4 (BENCHMARKS.md): OpenVINO INT8 306 images/s at batch 1 and 294 at batch 8,
onnxruntime INT8 176 and 174; only onnxruntime fp32 gains (64 and 79). So the service measures the served variant
when it loads it, and batches only when batch MAX_BATCH_SIZE beats batch 1 by BATCHING_MIN_GAIN.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from service.core.config import Settings
from service.core.engines import INPUT_SHAPE

PathName = Literal["direct", "batched"]
# A batch-1 timing is the best of this many rounds of a few runs each: long enough to be past a cold cache,
# short enough to add ~0.1 s to a load of the default model.
_ROUNDS = 3
_LONE_RUNS = 4


@dataclass(frozen=True)
class PathChoice:
    """The chosen path and the measurement behind it (GET /model's `request_path`, the start-up log)."""

    path: PathName
    reason: str
    batch1_images_per_s: float | None = None
    batched_images_per_s: float | None = None
    batch_size: int | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _images_per_s(run: Callable[[np.ndarray], np.ndarray], batch: int, runs: int) -> float:
    x = np.zeros((batch, *INPUT_SHAPE), np.float32)
    best = float("inf")
    for _ in range(_ROUNDS):
        start = time.perf_counter()
        for _ in range(runs):
            run(x)
        best = min(best, time.perf_counter() - start)
    return batch * runs / best


def measure(predict: Callable[[np.ndarray], np.ndarray], batch_size: int) -> tuple[float, float]:
    """Images/s of the served variant at batch 1 and at batch_size."""
    return _images_per_s(predict, 1, _LONE_RUNS), _images_per_s(predict, batch_size, 1)


def choose(settings: Settings, predict: Callable[[np.ndarray], np.ndarray]) -> PathChoice:
    """REQUEST_PATH=direct or batched is taken as set; auto measures (see the module's docstring)."""
    if settings.request_path != "auto":
        return PathChoice(settings.request_path, f"REQUEST_PATH={settings.request_path}")
    if settings.max_batch_size == 1:
        return PathChoice("direct", "MAX_BATCH_SIZE=1: there is nothing to batch")
    lone, batched = measure(predict, settings.max_batch_size)
    gain = batched / lone
    path: PathName = "batched" if gain >= settings.batching_min_gain else "direct"
    reason = (
        f"batch {settings.max_batch_size} runs {gain:.2f}x the images/s of batch 1 "
        f"({'at least' if path == 'batched' else 'below'} BATCHING_MIN_GAIN={settings.batching_min_gain:g})"
    )
    return PathChoice(path, reason, round(lone, 1), round(batched, 1), settings.max_batch_size)
