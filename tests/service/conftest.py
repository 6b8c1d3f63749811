"""Service-only fixtures."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.core.model import Classifier
from tests.service.helpers import InferenceGate


@pytest.fixture
def gate(make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch) -> Iterator[InferenceGate]:
    """Holds onnxruntime calls on demand. It depends on make_client so that it is torn down first:
    a client shuts down only after its queued inference has run, so the gate must be open by then."""
    gate = InferenceGate()
    predict, infer = Classifier.predict, Classifier.infer

    def gated_predict(self: Classifier, batch: np.ndarray) -> np.ndarray:
        gate.pass_through()
        return predict(self, batch)

    def gated_infer(self: Classifier, batch: np.ndarray) -> np.ndarray:
        gate.pass_through()
        return infer(self, batch)

    monkeypatch.setattr(Classifier, "predict", gated_predict)
    monkeypatch.setattr(Classifier, "infer", gated_infer)
    yield gate
    gate.open()
