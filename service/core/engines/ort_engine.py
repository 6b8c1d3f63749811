"""The onnxruntime engine (always installed): fp32 and INT8 (QDQ) files on the CPU execution provider.

onnxruntime is imported only when this engine loads a file, like OpenVINO in its engine: a service that
OpenVINO serves never imports it (26 MiB of RSS at ready with the session that used to check every file's
signature, BENCHMARKS.md)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from service.core.config import SessionSettings
from service.core.cpu import available_cpus
from service.core.engines.base import EngineName, ModelLoadError, Port, Precision, check_signature

if TYPE_CHECKING:
    import onnxruntime as ort

NAME: EngineName = "onnxruntime"
# onnxruntime's CPU provider has no bf16 convolution kernels; bf16 is an OpenVINO runtime choice.
PRECISIONS: tuple[Precision, ...] = ("fp32", "int8")


# onnxruntime's element types in the messages' words (numpy's).
_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
          "tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(int32)": "int32", "tensor(int64)": "int64"}


def _ort() -> ModuleType:
    import onnxruntime

    return onnxruntime


def session_options(settings: SessionSettings, threads: int | None = None) -> ort.SessionOptions:
    """Tuned for a small CPU box: one inference at a time, using every core the container has."""
    ort = _ort()
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
    ort = _ort()
    try:
        return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
        raise ModelLoadError(f"model file {path} is not a loadable ONNX model") from exc


def _port(value: ort.NodeArg) -> Port:
    return Port(_TYPES.get(value.type, value.type), tuple(d if isinstance(d, int) else "?" for d in value.shape))


def check_session(session: ort.InferenceSession, path: Path) -> None:
    """The file's signature as onnxruntime reads it (`service.core.engines.base.check_signature`)."""
    check_signature(path, [_port(i) for i in session.get_inputs()], [_port(o) for o in session.get_outputs()])


def check_file(data: bytes, path: Path) -> None:
    """Loads the file without optimising it (fast) only to read it: what another engine could not read, said in
    onnxruntime's words (a file no engine reads, or one that onnxruntime would serve)."""
    ort = _ort()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    quiet(options)
    check_session(open_session(data, path, options), path)


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

    def release_memory(self) -> None:
        """Nothing to free: onnxruntime's arena (ORT_CPU_MEM_ARENA) keeps what it grew for the session's life."""

    def describe(self) -> dict[str, object]:
        return {"engine": NAME, "precision": self.precision, "version": _ort().__version__, "threads": self._threads}


def load(data: bytes, path: Path, precision: Precision, threads: int, settings: SessionSettings) -> OnnxRuntimeEngine:
    """The precision is the file's own (an INT8 variant is its own QDQ file); it is recorded, not applied."""
    options = session_options(settings, threads)
    session = open_session(data, path, options)
    check_session(session, path)
    return OnnxRuntimeEngine(session, precision, options.intra_op_num_threads)
