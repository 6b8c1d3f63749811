"""Baseline (b): the project's stack used the plain way.

FastAPI + onnxruntime with default session options, one `session.run` per request at batch 1,
and a full-size Pillow decode. `MODEL_PATH=... uvicorn bench.baselines.onnx_app:app`.
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort

from bench.baselines import Predict, baseline_app


def load_session() -> Predict:
    session = ort.InferenceSession(
        os.environ.get("MODEL_PATH", "models/model.onnx"), providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name

    def predict(x: np.ndarray) -> np.ndarray:
        return session.run(None, {name: x})[0]

    return predict


app = baseline_app(load_session)
