"""bench.negligible_model: a model the service loads and answers with, so bench.overhead measures the service."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.negligible_model import write_negligible_model
from service.core.config import SessionSettings
from service.core.model import Classifier


def test_the_service_loads_it_and_it_answers_a_sigmoid_of_the_mean(tmp_path: Path) -> None:
    model = Classifier.load(write_negligible_model(tmp_path / "model.onnx"), SessionSettings(), engine="onnxruntime")
    batch = np.stack([np.full((100, 100, 1), level, np.float32) for level in (0.0, 127.5, 255.0)])
    np.testing.assert_allclose(model.predict(batch), 1 / (1 + np.exp(-np.array([-0.5, 0.0, 0.5]))), atol=1e-6)
