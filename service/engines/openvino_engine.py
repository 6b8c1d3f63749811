"""The optional OpenVINO engine (`pip install '.[openvino]'`): reads the same .onnx files.

fp32 and bf16 run the fp32 file (bf16 is OpenVINO's INFERENCE_PRECISION_HINT); int8 runs the QDQ file,
whose quantised convolutions OpenVINO executes as INT8 with the rest in f32."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np

from service.engines.base import EngineName, ModelLoadError, Precision

NAME: EngineName = "openvino"
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "int8")
# f32 must be asked for: on a CPU with AVX512-BF16 or AMX OpenVINO otherwise computes in bf16 by default.
# The INT8 file with the f32 hint measured 121 images/s at batch 8 against 74 with bf16 (2-core Zen 4), so
# the layers left in float stay f32 there too.
_INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


class OpenVinoEngine:
    name: EngineName = NAME

    def __init__(self, compiled: object, precision: Precision, threads: int, version: str) -> None:
        self._compiled = compiled
        self._request = compiled.create_infer_request()  # type: ignore[attr-defined]
        # One infer request, one caller at a time: the batcher runs one batch at a time anyway; the lock
        # keeps an offline caller (a tool, a test) on another thread from corrupting its buffers.
        self._lock = threading.Lock()
        self.precision = precision
        self._threads = threads
        self._version = version

    def run(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            self._request.infer({0: batch}, share_inputs=True)  # type: ignore[attr-defined]
            # Copied out: the output tensor's memory is reused by the next inference.
            return np.array(self._request.get_output_tensor(0).data[:, 0], dtype=np.float32)  # type: ignore[attr-defined]

    def describe(self) -> dict[str, object]:
        return {"engine": NAME, "precision": self.precision, "version": self._version, "threads": self._threads}


def load(data: bytes, path: Path, precision: Precision, threads: int) -> OpenVinoEngine:
    if not installed():
        raise ModelLoadError("ENGINE=openvino needs the openvino package: pip install '.[openvino]'")
    import openvino as ov  # optional extra: imported only when this engine is chosen

    # LATENCY: one stream using every allowed core, the shape of the batcher's one-batch-at-a-time calls.
    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads,
        "INFERENCE_PRECISION_HINT": _INFERENCE_PRECISION[precision],
    }
    try:
        core = ov.Core()
        compiled = core.compile_model(core.read_model(data), "CPU", config)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"model file {path} cannot be compiled by OpenVINO: {first}") from exc
    return OpenVinoEngine(compiled, precision, threads, ov.__version__)
