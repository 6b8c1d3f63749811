"""The onnxruntime engine (always installed): fp32 and INT8 (QDQ) files on the CPU execution provider."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.core.config import SessionSettings
from service.core.cpu import available_cpus
from service.core.engines.base import INPUT_SHAPE, EngineName, ModelLoadError, Precision

NAME: EngineName = "onnxruntime"
# onnxruntime's CPU provider has no bf16 convolution kernels; bf16 is an OpenVINO runtime choice.
PRECISIONS: tuple[Precision, ...] = ("fp32", "int8")


def session_options(settings: SessionSettings, threads: int | None = None) -> ort.SessionOptions:
    """Tuned for a small CPU box: one inference at a time, using every core the container has."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads or threads or available_cpus()
    # One request batch at a time: parallelism comes from inside the convolutions.
    options.inter_op_num_threads = settings.inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = settings.cpu_mem_arena
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if settings.allow_spinning else "0")
    return quiet(options)


def quiet(options: ort.SessionOptions) -> ort.SessionOptions:
    """Fatal messages only from onnxruntime's own stderr logger: every error it logs (a kernel that fails
    at warm-up printed a colored multi-line ERROR beside our one line) is also raised, and reported by us."""
    options.log_severity_level = 4
    return options


def open_session(data: bytes, path: Path, options: ort.SessionOptions) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
        raise ModelLoadError(f"model file {path} is not a loadable ONNX model") from exc


def check_signature(session: ort.InferenceSession, path: Path) -> None:
    """What the file declares, in onnxruntime's words, whichever engine will run it."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelLoadError(f"model {path} must have one input and one output")
    shape_in, shape_out = inputs[0].shape, outputs[0].shape
    if inputs[0].type != "tensor(float)" or len(shape_in) != 4 or tuple(shape_in[1:]) != INPUT_SHAPE:
        raise ModelLoadError(
            f"model {path} takes {inputs[0].type} {shape_in}; the service needs float32 (N, 100, 100, 1)"
        )
    if outputs[0].type != "tensor(float)" or len(shape_out) != 2 or shape_out[1] != 1:
        raise ModelLoadError(f"model {path} returns {outputs[0].type} {shape_out}; expected float32 (N, 1)")


def check_file(data: bytes, path: Path) -> None:
    """Loads the file without optimising it (fast) only to check its signature: used before another engine."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    quiet(options)
    check_signature(open_session(data, path, options), path)


class OnnxRuntimeEngine:
    name: EngineName = NAME

    def __init__(self, session: ort.InferenceSession, precision: Precision, threads: int) -> None:
        self._session = session
        self._input_name = session.get_inputs()[0].name
        self.precision = precision
        self._threads = threads

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input_name: batch})[0][:, 0]

    # An InferenceSession's run is safe to call from several threads at once.
    infer = run

    def describe(self) -> dict[str, object]:
        return {"engine": NAME, "precision": self.precision, "version": ort.__version__, "threads": self._threads}


def load(data: bytes, path: Path, precision: Precision, threads: int, settings: SessionSettings) -> OnnxRuntimeEngine:
    """The precision is the file's own (an INT8 variant is its own QDQ file); it is recorded, not applied."""
    options = session_options(settings, threads)
    session = open_session(data, path, options)
    check_signature(session, path)
    return OnnxRuntimeEngine(session, precision, options.intra_op_num_threads)
