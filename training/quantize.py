"""A static INT8 (QDQ, per-channel) copy of the exported model, calibrated on training images."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from training.export import INPUT_NAME


class _Batches(CalibrationDataReader):
    def __init__(self, x: np.ndarray, batch_size: int = 8) -> None:
        self._batches = iter(
            [x[i : i + batch_size].astype(np.float32) for i in range(0, len(x), batch_size)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def quantize_int8(fp32_path: Path, int8_path: Path, calibration: np.ndarray) -> None:
    """U8 activations / S8 weights, the pairing onnxruntime's x86 kernels (VNNI) are fastest with."""
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(int8_path),
            _Batches(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
