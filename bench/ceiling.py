"""The ceiling: the ONNX model alone, through onnxruntime with the service's own session options."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.timing import repeat
from service.config import SessionSettings, Settings
from service.model import INPUT_SHAPE, session_options

BATCH_SIZES = (1, 8, 32)


@dataclass(frozen=True)
class CeilingResult:
    model: str  # "fp32" or "int8"
    batch_size: int
    images_per_s: float
    ms_per_batch_p50: float
    ms_per_batch_p99: float
    batches: int


def service_session(path: Path) -> ort.InferenceSession:
    """The session the service would build: its session_options with the ORT_* settings of this environment."""
    settings = Settings(model_path=path)
    options = session_options(
        SessionSettings(
            settings.ort_intra_op_threads,
            settings.ort_inter_op_threads,
            settings.ort_cpu_mem_arena,
            settings.ort_allow_spinning,
        )
    )
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def measure(label: str, path: Path, seconds: float, batch_sizes: tuple[int, ...] = BATCH_SIZES) -> list[CeilingResult]:
    session = service_session(path)
    name = session.get_inputs()[0].name
    rng = np.random.default_rng(0)
    results = []
    for size in batch_sizes:
        x = rng.uniform(0, 255, (size, *INPUT_SHAPE)).astype(np.float32)
        timings = repeat(lambda _, x=x: session.run(None, {name: x}), seconds, min_calls=5, warmup_calls=3)
        results.append(
            CeilingResult(
                model=label,
                batch_size=size,
                images_per_s=timings.calls * size / timings.total_s,
                ms_per_batch_p50=timings.percentile_ms(50),
                ms_per_batch_p99=timings.percentile_ms(99),
                batches=timings.calls,
            )
        )
    return results
