"""Which request path a loaded model gets: direct (decode and run on one thread) or batched (the micro-batcher).

Batching pays only where the engine runs a batch faster per image than single images (a GPU, or an fp32 model on
some CPUs). Measured on a 2-core Zen 4 (BENCHMARKS.md): OpenVINO INT8 306 images/s at batch 1 and 294 at batch 8,
onnxruntime INT8 176 and 174; only onnxruntime fp32 gains (64 and 79). So the service measures the served variant
when it loads it, and batches only when batch MAX_BATCH_SIZE beats single images by BATCHING_MIN_GAIN.

Single images are timed as the direct path runs them under load: one per worker thread at once, through the
engine's thread-safe `infer`. Timed one at a time instead, OpenVINO's single image ran on its LATENCY compilation
and a batch split across the THROUGHPUT streams, and a 2-core AVX2 EPYC measured a "gain" of 1.36-1.40 that was
the streams', not the batch's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from service.core.config import Settings
from service.core.engines import INPUT_SHAPE

PathName = Literal["direct", "batched"]
# Rounds of single images and of one batch, interleaved so that a neighbour's load hits both alike; the verdict
# is the median round's ratio. Each round runs MAX_BATCH_SIZE images either way: ~0.1 s for the default model.
_ROUNDS = 5
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


def _seconds(run: Callable[[], object], pool: ThreadPoolExecutor, threads: int) -> float:
    start = time.perf_counter()
    for job in [pool.submit(run) for _ in range(threads)]:
        job.result()
    return time.perf_counter() - start


def measure(
    infer: Callable[[np.ndarray], np.ndarray], predict: Callable[[np.ndarray], np.ndarray], batch_size: int,
    threads: int,
) -> tuple[float, float]:
    """Images/s of single images through `infer` on `threads` threads at once (the direct path under load), and
    of batch_size batches through `predict` (the batcher's call): each the median of interleaved rounds."""
    one, batch = np.zeros((1, *INPUT_SHAPE), np.float32), np.zeros((batch_size, *INPUT_SHAPE), np.float32)
    per_thread = -(-batch_size // threads)

    def singles() -> None:
        for _ in range(per_thread):
            infer(one)

    lone, batched = [], []
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(_ROUNDS):
            lone.append(per_thread * threads / _seconds(singles, pool, threads))
            batched.append(batch_size / _seconds(lambda: predict(batch), pool, 1))
    return float(np.median(lone)), float(np.median(batched))


def choose(
    settings: Settings, infer: Callable[[np.ndarray], np.ndarray], predict: Callable[[np.ndarray], np.ndarray],
    threads: int,
) -> PathChoice:
    """REQUEST_PATH=direct or batched is taken as set; auto measures (see the module's docstring)."""
    if settings.request_path != "auto":
        return PathChoice(settings.request_path, f"REQUEST_PATH={settings.request_path}")
    if settings.max_batch_size == 1:
        return PathChoice("direct", "MAX_BATCH_SIZE=1: there is nothing to batch")
    lone, batched = measure(infer, predict, settings.max_batch_size, threads)
    gain = batched / lone
    path: PathName = "batched" if gain >= settings.batching_min_gain else "direct"
    reason = (
        f"batch {settings.max_batch_size} runs {gain:.2f}x the images/s of single images on {threads} threads "
        f"({'at least' if path == 'batched' else 'below'} BATCHING_MIN_GAIN={settings.batching_min_gain:g})"
    )
    return PathChoice(path, reason, round(lone, 1), round(batched, 1), settings.max_batch_size)
