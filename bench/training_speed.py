"""Training throughput of the full seed CNN: images/s over one epoch of random images, after a warm-up.

Run in its own process per precision (`python -m bench.training_speed --precision mixed_bfloat16`),
because the Keras precision policy is global and TensorFlow should not stay loaded in the harness.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

PRECISIONS = ("float32", "mixed_bfloat16")
MARKER = "BENCH_JSON "


@dataclass(frozen=True)
class TrainingResult:
    precision: str
    images: int
    batch_size: int
    images_per_s: float
    seconds: float
    error: str | None = None


def _measure(precision: str, images: int, batch_size: int) -> dict[str, float]:
    import keras
    import numpy as np

    from training.model import compile_model, make_model

    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(precision)
    model = compile_model(make_model())
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (images, 100, 100, 1)).astype(np.float32)
    y = rng.integers(0, 2, (images, 1)).astype(np.float32)
    # The same fit path once on two batches, so tracing and allocation are not timed.
    model.fit(x[: 2 * batch_size], y[: 2 * batch_size], batch_size=batch_size, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=False)
    seconds = time.perf_counter() - start
    return {"images_per_s": images / seconds, "seconds": seconds}


def measure(precision: str, images: int, batch_size: int, timeout_s: float = 1800) -> TrainingResult:
    """Runs one measurement in a fresh Python process."""
    command = [sys.executable, "-m", "bench.training_speed", "--precision", precision,
               "--images", str(images), "--batch-size", str(batch_size)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return TrainingResult(precision, images, batch_size, float("nan"), float("nan"), f"over {timeout_s:g} s")
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return TrainingResult(precision, images, batch_size, float("nan"), float("nan"), tail)
    raw = json.loads(lines[-1].removeprefix(MARKER))
    return TrainingResult(precision, images, batch_size, raw["images_per_s"], raw["seconds"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--precision", choices=PRECISIONS, default="float32")
    p.add_argument("--images", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args()
    result = _measure(args.precision, args.images, args.batch_size)
    sys.stdout.write(MARKER + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
