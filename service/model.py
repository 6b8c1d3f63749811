"""The ONNX classifier: loading, signature checks, warm-up and batched prediction."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.config import SessionSettings
from service.cpu import available_cpus
from service.model_card import ModelCard, ModelCardError, card_path_for, read_model_card
from service.preprocessing import INPUT_SIZE

log = logging.getLogger(__name__)
INPUT_SHAPE = (*INPUT_SIZE, 1)


class ModelLoadError(RuntimeError):
    """The model cannot be served; the message says which file and why."""


def session_options(settings: SessionSettings) -> ort.SessionOptions:
    """Tuned for a small CPU box: one inference at a time, using every core the container has."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads or available_cpus()
    # One request batch at a time: parallelism comes from inside the convolutions.
    options.inter_op_num_threads = settings.inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = settings.cpu_mem_arena
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if settings.allow_spinning else "0")
    return options


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_signature(session: ort.InferenceSession, path: Path) -> None:
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


class Classifier:
    """A loaded, checked and warmed ONNX session with its model card."""

    def __init__(self, session: ort.InferenceSession, metadata: ModelCard, model_id: str) -> None:
        self._session = session
        self._input_name = session.get_inputs()[0].name
        self.metadata = metadata
        self.model_id = model_id

    @classmethod
    def load(cls, model_path: Path, settings: SessionSettings) -> Classifier:
        if not model_path.is_file():
            raise ModelLoadError(f"model file {model_path} does not exist")
        metadata_path = card_path_for(model_path)
        try:
            metadata = read_model_card(metadata_path)
        except ModelCardError as exc:
            raise ModelLoadError(str(exc)) from exc
        try:
            data = model_path.read_bytes()
        except FileNotFoundError as exc:
            raise ModelLoadError(f"model file {model_path} does not exist") from exc
        except OSError as exc:
            raise ModelLoadError(f"model file {model_path} is not readable: {exc.strerror}") from exc
        model_id = _sha256(data)
        if metadata.sha256 and metadata.sha256 != model_id:
            raise ModelLoadError(
                f"model file {model_path} does not match its metadata {metadata_path} (sha256 differs)"
            )
        try:
            session = ort.InferenceSession(
                data, sess_options=session_options(settings), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ModelLoadError(f"model file {model_path} is not a loadable ONNX model") from exc
        _check_signature(session, model_path)
        declared = metadata.input.shape or [None, *INPUT_SHAPE]
        if tuple(declared[1:]) != INPUT_SHAPE:
            raise ModelLoadError(f"metadata {metadata_path} declares input {metadata.input}, not (N, 100, 100, 1)")
        return cls(session, metadata, model_id)

    def describe(self) -> dict[str, object]:
        """The card as written (unset defaults left out) and the file's sha256: GET /model's body."""
        return {**self.metadata.model_dump(mode="json", exclude_unset=True), "id": self.model_id}

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(N, 100, 100, 1) float32 raw pixels -> (N,) positive-class probabilities."""
        return self._session.run(None, {self._input_name: batch})[0][:, 0]

    def warm_up(self, batch_sizes: tuple[int, ...]) -> float:
        """Runs each batch size once so the first user request does not pay for allocation."""
        start = time.perf_counter()
        for size in batch_sizes:
            result = self.predict(np.zeros((size, *INPUT_SHAPE), np.float32))
            if result.shape != (size,) or not np.all(np.isfinite(result)):
                raise ModelLoadError("model warm-up returned malformed or non-finite output")
        return time.perf_counter() - start
