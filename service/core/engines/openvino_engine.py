"""The OpenVINO engine (the default where it loads; onnxruntime is the fallback): reads the same .onnx files.

fp32 and bf16 run the fp32 file (bf16 is OpenVINO's INFERENCE_PRECISION_HINT); int8 runs the QDQ file,
whose quantised convolutions OpenVINO executes as INT8 with the rest in f32."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np

from service.core.engines.base import (
    EngineName,
    EngineUnavailableError,
    ModelLoadError,
    Port,
    Precision,
    check_signature,
)
from service.core.failures import one_line

NAME: EngineName = "openvino"
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "int8")
# f32 must be asked for: on a CPU with AVX512-BF16 or AMX OpenVINO otherwise computes in bf16 by default.
# The INT8 file with the f32 hint measured 121 images/s at batch 8 against 74 with bf16 (2-core Zen 4), so
# the layers left in float stay f32 there too.
_INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def _output(request: object) -> np.ndarray:
    # Copied out: the output tensor's memory is reused by the request's next inference.
    return np.array(request.get_output_tensor(0).data[:, 0], dtype=np.float32)  # type: ignore[attr-defined]


class OpenVinoEngine:
    """One image runs on the LATENCY compilation (one stream, every thread); a batch is split across the
    THROUGHPUT compilation's streams (one thread each), run together.

    Why two: alone, both reach the same ~320 images/s (INT8, 2-core Zen 4); under load they do not. While
    the decode pool and the event loop share the cores, a LATENCY inference's threads (most likely) wait for
    each other at every layer whenever one is preempted; independent one-thread streams keep going. Measured with wrk
    at 16 connections on ELPV (BENCHMARKS.md, "Runs 4-6"), four alternating 6 s runs each: 221.1 req/s with
    the streams against 211.5 with LATENCY alone (+4.5 %), the direction of 25-line servers written both ways
    (THROUGHPUT 236 against LATENCY 195)."""

    name: EngineName = NAME

    def __init__(
        self, latency: object, streams: object | None, precision: Precision, threads: int, version: str
    ) -> None:
        self._latency_model = latency
        self._lone = latency.create_infer_request()  # type: ignore[attr-defined]
        self._streams = (
            [streams.create_infer_request() for _ in range(streams.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))]  # type: ignore[attr-defined]
            if streams is not None else []
        )
        # One caller at a time: the batcher runs one batch at a time anyway; the lock keeps an offline caller
        # (a tool, a test) on another thread from corrupting the requests' buffers.
        self._lock = threading.Lock()
        self._streams_model = streams
        self._own = threading.local()
        self.precision = precision
        self._threads = threads
        self._version = version

    def run(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            if len(batch) < 2 or len(self._streams) < 2:
                self._lone.infer({0: batch}, share_inputs=True)  # type: ignore[attr-defined]
                return _output(self._lone)
            # Views along the batch axis of a C-contiguous array stay contiguous: shared, not copied.
            chunks = [c for c in np.array_split(batch, len(self._streams)) if len(c)]
            requests = self._streams[: len(chunks)]
            for request, chunk in zip(requests, chunks, strict=True):
                request.start_async({0: chunk}, share_inputs=True)  # type: ignore[attr-defined]
            for request in requests:
                request.wait()  # type: ignore[attr-defined]
            return np.concatenate([_output(request) for request in requests])

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """As run, from any number of threads at once (the direct request path under load): each thread runs an
        infer request of its own on the THROUGHPUT compilation, whose streams (one thread each) OpenVINO
        schedules. A lone request takes `run` instead (every core)."""
        if self._streams_model is None:
            return self.run(batch)
        request = getattr(self._own, "request", None)
        if request is None:
            request = self._own.request = self._streams_model.create_infer_request()  # type: ignore[attr-defined]
        request.infer({0: batch}, share_inputs=True)
        return _output(request)

    def release_memory(self) -> None:
        """OpenVINO keeps each compilation's intermediate buffers at the largest batch it has run: for the default
        model, 34 MiB of RSS at ready after the warm-up's batch of 8 and the path measurement (BENCHMARKS.md)."""
        with self._lock:
            for compiled in (self._latency_model, self._streams_model):
                if compiled is not None:
                    compiled.release_memory()  # type: ignore[attr-defined]

    def describe(self) -> dict[str, object]:
        return {"engine": NAME, "precision": self.precision, "version": self._version, "threads": self._threads,
                "streams": max(1, len(self._streams))}


def _last_line(exc: RuntimeError) -> str:
    """OpenVINO's error in one line: the last of its message (the first ones are its source file and a trace)."""
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__


def _port(value: object) -> Port:
    """OpenVINO's reading of one input or output (element type, partial shape) in the messages' words."""
    try:
        type_name = np.dtype(value.get_element_type().to_dtype()).name  # type: ignore[attr-defined]
    except (RuntimeError, TypeError):  # an element type numpy has no name for (dynamic, string)
        type_name = str(value.get_element_type().get_type_name())  # type: ignore[attr-defined]
    shape = value.get_partial_shape()  # type: ignore[attr-defined]
    if shape.rank.is_dynamic:
        return Port(type_name, ("...",))
    return Port(type_name, tuple(d.get_length() if d.is_static else "?" for d in shape))


def _read(core: object, data: bytes, path: Path) -> object:
    """The file as OpenVINO reads it. A file it cannot read goes to onnxruntime's reader (imported only then) for
    the words: not an ONNX model at all (ModelLoadError), or one for onnxruntime to serve (EngineUnavailableError,
    so ENGINE=auto falls back as for a file OpenVINO cannot compile)."""
    try:
        return core.read_model(data)  # type: ignore[attr-defined]
    except RuntimeError as exc:
        from service.core.engines import ort_engine

        ort_engine.check_file(data, path)
        raise EngineUnavailableError(f"model file {path} cannot be read by OpenVINO: {_last_line(exc)}") from exc


def load(data: bytes, path: Path, precision: Precision, threads: int) -> OpenVinoEngine:
    if not installed():
        raise ModelLoadError(
            "ENGINE=openvino needs the openvino package, a dependency of the service: pip install openvino"
        )
    try:
        import openvino as ov  # imported only when this engine is chosen
    except ImportError as exc:  # a wheel whose shared libraries do not load on this machine
        raise EngineUnavailableError(f"the openvino package cannot be imported here: {one_line(exc)}") from exc

    common = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": _INFERENCE_PRECISION[precision]}
    core = ov.Core()
    model = _read(core, data, path)
    check_signature(path, [_port(i) for i in model.inputs], [_port(o) for o in model.outputs])  # type: ignore[attr-defined]
    try:
        latency = core.compile_model(model, "CPU", {**common, "PERFORMANCE_HINT": "LATENCY"})
        # One stream per thread (NUM_STREAMS = threads): with a single thread there is nothing to split.
        streams = (
            core.compile_model(model, "CPU", {**common, "PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": threads})
            if threads > 1 else None
        )
    except RuntimeError as exc:
        raise EngineUnavailableError(f"model file {path} cannot be compiled by OpenVINO: {_last_line(exc)}") from exc
    return OpenVinoEngine(latency, streams, precision, threads, ov.__version__)
