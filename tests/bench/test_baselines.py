"""The three baseline servers: ready after their lifespan, one probability per raw image body."""

from __future__ import annotations

import importlib
import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from bench.baselines import decode_full
from service.core.config import Settings
from service.edge.app import create_app
from tests.conftest import image_bytes
from tests.model_factory import tiny_probability


def test_onnx_baseline_answers_the_models_probability_of_the_full_decode(
    tiny_model_path: Path, png_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODEL_PATH", str(tiny_model_path))
    onnx_app = importlib.import_module("bench.baselines.onnx_app")

    with TestClient(onnx_app.app) as client:
        assert client.get("/readyz").json() == {"status": "ready"}
        answer = client.post("/predict", content=png_bytes, headers={"content-type": "image/png"})

    assert answer.status_code == 200
    expected = tiny_probability(decode_full(png_bytes)[None])[0]
    assert answer.json()["probability"] == pytest.approx(expected, abs=1e-5)


@pytest.mark.slow
def test_keras_baseline_answers_with_the_seed_cnn(png_bytes: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KERAS_WEIGHTS", raising=False)
    keras_app = importlib.import_module("bench.baselines.keras_app")

    with TestClient(keras_app.app) as client:
        assert client.get("/readyz").json() == {"status": "ready"}
        answer = client.post("/predict", content=png_bytes, headers={"content-type": "image/png"})
        model = client.app.state.predict.func.__self__

    assert answer.status_code == 200
    expected = model.predict(decode_full(png_bytes)[None], verbose=0)[0, 0]
    assert answer.json()["probability"] == pytest.approx(float(expected), abs=1e-6)
    assert 0.0 <= answer.json()["probability"] <= 1.0
    assert np.isfinite(answer.json()["probability"])


def test_openvino_baseline_answers_the_services_probabilities(
    tiny_model_path: Path, png_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Baseline (c) and the service on OpenVINO: the same preprocessing of a PNG, the same model, one answer."""
    pytest.importorskip("openvino")
    monkeypatch.setenv("MODEL_PATH", str(tiny_model_path))
    openvino_app = importlib.import_module("bench.baselines.openvino_app")
    jpeg = image_bytes(Image.open(io.BytesIO(png_bytes)).convert("RGB"), "JPEG", quality=90)

    with TestClient(openvino_app.app) as baseline:
        assert baseline.get("/readyz").json() == {"status": "ready"}
        got = {
            kind: baseline.post("/predict", content=data, headers={"content-type": f"image/{kind}"})
            for kind, data in (("png", png_bytes), ("jpeg", jpeg))
        }
    with TestClient(create_app(Settings(model_path=tiny_model_path, engine="openvino"))) as service:
        expected = service.post("/predict", content=png_bytes, headers={"content-type": "image/png"}).json()

    assert {answer.status_code for answer in got.values()} == {200}
    assert got["png"].json()["probability"] == pytest.approx(expected["predictions"][0]["probability"], abs=1e-6)
    # The draft decode of a JPEG: what the tiny model computes of the same decode.
    drafted = openvino_app.decode_draft(jpeg)
    assert got["jpeg"].json()["probability"] == pytest.approx(tiny_probability(drafted)[0], abs=1e-5)
