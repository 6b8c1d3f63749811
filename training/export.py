"""Keras -> ONNX with tf2onnx, verified against Keras, plus the metadata file the service reads."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import keras
import numpy as np
import onnxruntime as ort
import tensorflow as tf
import tf2onnx

from service.core.model_card import ModelCardError, card_path_for, validate_model_card

EXPORT_TOLERANCE = 1e-4
OPSET = 17
INPUT_NAME = "input"
# Recorded in the card: tf2onnx.convert.from_keras breaks on Keras 3 (export_onnx).
EXPORT_TOOL = "tf2onnx.convert.from_function"


class ExportError(Exception):
    """The exported graph does not reproduce the Keras model."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def export_onnx(model: keras.Model, path: Path) -> None:
    """from_function, because tf2onnx.convert.from_keras breaks on Keras 3 (tensorflow-onnx #2348)."""
    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name=INPUT_NAME)
    function = tf.function(lambda x: model(x, training=False))
    tf2onnx.convert.from_function(
        function, input_signature=[spec], opset=OPSET, output_path=str(path)
    )


def onnx_predict(path: Path, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """In batches: the first block's activations alone are 20 MB per image."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate(
        [
            session.run(None, {name: x[i : i + batch_size].astype(np.float32)})[0]
            for i in range(0, len(x), batch_size)
        ]
    )


def verify_export(model: keras.Model, path: Path, x: np.ndarray) -> float:
    """Max abs difference between Keras and onnxruntime on real images; raises above tolerance."""
    expected = model.predict(x, verbose=0)
    got = onnx_predict(path, x)
    if got.shape != expected.shape:
        raise ExportError(f"ONNX output shape {got.shape} differs from Keras {expected.shape}")
    difference = float(np.abs(got - expected).max())
    if not difference <= EXPORT_TOLERANCE:
        raise ExportError(
            f"ONNX and Keras outputs differ by {difference:.2e} (tolerance {EXPORT_TOLERANCE:.0e}); "
            "the export is not faithful"
        )
    return difference


def write_metadata(onnx_path: Path, metadata: dict) -> Path:
    """The model card beside <model>.onnx, with the file's sha256 so the service can name the model. Validated
    against the service's schema before it is written: a card the service would refuse is an export error."""
    path = card_path_for(onnx_path)
    content = {**metadata, "onnx_file": onnx_path.name, "sha256": sha256_of(onnx_path)}
    try:
        validate_model_card(content, path)
    except ModelCardError as exc:
        raise ExportError(f"the service would not load this card: {exc}") from exc
    path.write_text(json.dumps(content, indent=2, sort_keys=False) + "\n")
    return path
