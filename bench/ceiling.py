"""The ceiling: the ONNX model alone, through onnxruntime with the service's own session options."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from pydantic import TypeAdapter

from bench.timing import repeat
from service.core.config import SessionSettings, Settings
from service.core.engines import choose, detect, installed_engines
from service.core.engines.ort_engine import session_options
from service.core.model import INPUT_SHAPE, Classifier
from service.core.model_card import card_path_for, read_model_card

BATCH_SIZES = (1, 8, 32)
# Labels of the rows measured through the service's own engine (measure_served).
SERVED = "served"
SERVED_FP32 = "served-fp32"


@dataclass(frozen=True)
class CeilingResult:
    model: str  # "fp32" or "int8" (onnxruntime); SERVED or SERVED_FP32 (the service's engine)
    batch_size: int
    images_per_s: float
    ms_per_batch_p50: float
    ms_per_batch_p99: float
    batches: int
    engine: str = "onnxruntime"
    precision: str = ""
    # Process CPU time per image (every engine thread): the model's core-ms alone.
    cpu_ms_per_image: float | None = None


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


def _measured(
    label: str, run: Callable[[np.ndarray], object], seconds: float, batch_sizes: tuple[int, ...], **about: str
) -> list[CeilingResult]:
    rng = np.random.default_rng(0)
    results = []
    for size in batch_sizes:
        x = rng.uniform(0, 255, (size, *INPUT_SHAPE)).astype(np.float32)
        timings = repeat(lambda _, x=x: run(x), seconds, min_calls=5, warmup_calls=3)
        results.append(
            CeilingResult(
                model=label,
                batch_size=size,
                images_per_s=timings.calls * size / timings.total_s,
                ms_per_batch_p50=timings.percentile_ms(50),
                ms_per_batch_p99=timings.percentile_ms(99),
                batches=timings.calls,
                cpu_ms_per_image=timings.cpu_ms_per(size),
                **about,
            )
        )
    return results


def measure(label: str, path: Path, seconds: float, batch_sizes: tuple[int, ...] = BATCH_SIZES) -> list[CeilingResult]:
    session = service_session(path)
    name = session.get_inputs()[0].name
    return _measured(label, lambda x: session.run(None, {name: x}), seconds, batch_sizes, precision=label)


def measure_served(path: Path, service_env: Mapping[str, str], seconds: float) -> list[CeilingResult]:
    """The model alone as `python -m service` runs it with these ENGINE/PRECISION/FLIP_AVERAGED settings: the
    variant they choose (batch 1 and 8: the lone-request and throughput floors), and PRECISION=fp32 on the
    same engine (batch 8: what the fp32 service is compared with)."""
    # Parsed as the service's settings parse it (pydantic's bool), not by a second list of spellings.
    flips = TypeAdapter(bool).validate_python(service_env.get("FLIP_AVERAGED", False))
    served = Classifier.load(path, SessionSettings(), engine=service_env.get("ENGINE", "auto"),
                             precision=service_env.get("PRECISION", "auto"), flip_averaged=flips)  # fmt: skip
    fp32 = Classifier.load(path, SessionSettings(), engine=served.engine.name, precision="fp32", flip_averaged=flips)
    return [
        *_measured(SERVED, served.predict, seconds, (1, 8), engine=served.engine.name,
                   precision=served.engine.precision),
        *_measured(SERVED_FP32, fp32.predict, seconds, (8,), engine=fp32.engine.name, precision="fp32"),
    ]  # fmt: skip


def served_file(path: Path, service_env: Mapping[str, str]) -> Path:
    """The file `python -m service` serves for MODEL_PATH=path with these ENGINE/PRECISION settings on this CPU
    (model.int8.onnx where INT8 passes, else the fp32 file): what baseline (c) is given, so both run one file."""
    card = read_model_card(card_path_for(path))
    choice = choose(service_env.get("ENGINE", "auto"), service_env.get("PRECISION", "auto"), path, card, detect(),
                    installed_engines())  # fmt: skip
    return choice.model_path
