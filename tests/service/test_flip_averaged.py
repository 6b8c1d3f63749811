"""FLIP_AVERAGED: the card's flip-averaged file (training --tta) is served only when asked for, and says so."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.core.config import SessionSettings, Settings
from service.core.model import Classifier, ModelLoadError
from service.edge.app import create_app
from tests.model_factory import build_tiny_onnx, tiny_probability, with_gain, write_tiny_metadata
from tests.service.helpers import gray_png

# The stand-in for model.tta.onnx is the tiny graph with another gain, so its answers are told apart.
AVERAGED_GAIN = 6.0


@pytest.fixture
def model_with_flips(tmp_path: Path) -> Path:
    plain = build_tiny_onnx(tmp_path / "model.onnx")
    averaged = with_gain(plain, AVERAGED_GAIN, tmp_path / "model.tta.onnx")
    write_tiny_metadata(averaged, test_time_augmentation={"flips": ["identity", "horizontal", "vertical", "both"],
                                                          "plain_model": "model.onnx"})  # fmt: skip
    write_tiny_metadata(plain, flip_averaged_variant={"file": "model.tta.onnx", "threshold": 0.5})
    return plain


def test_the_plain_model_serves_unless_flip_averaging_is_asked_for(model_with_flips: Path) -> None:
    batch = np.random.default_rng(0).uniform(0, 255, (3, 100, 100, 1)).astype(np.float32)
    plain = Classifier.load(model_with_flips, SessionSettings(), engine="onnxruntime")
    averaged = Classifier.load(model_with_flips, SessionSettings(), engine="onnxruntime", flip_averaged=True)
    np.testing.assert_allclose(plain.predict(batch), tiny_probability(batch), atol=1e-5)
    np.testing.assert_allclose(averaged.predict(batch), tiny_probability(batch, AVERAGED_GAIN), atol=1e-5)
    assert (plain.metadata.flip_averaged, averaged.metadata.flip_averaged) == (False, True)
    assert averaged.path == model_with_flips.with_name("model.tta.onnx")
    assert averaged.describe()["flip_averaged"] is True


def test_every_answer_and_the_start_up_line_say_a_flip_averaged_model_answered(
    model_with_flips: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(model_path=model_with_flips, engine="onnxruntime", flip_averaged=True)
    with caplog.at_level(logging.INFO), TestClient(create_app(settings)) as client:
        body = client.post("/predict", content=gray_png(200), headers={"content-type": "image/png"}).json()
        described = client.get("/model").json()
    assert body["model"]["flip_averaged"] is True
    expected = float(tiny_probability(np.full((1, 1), 200.0), AVERAGED_GAIN)[0])
    assert body["predictions"][0]["probability"] == pytest.approx(expected)
    assert described["flip_averaged"] is True
    assert described["test_time_augmentation"]["plain_model"] == "model.onnx"
    assert any("flip-averaged" in record.getMessage() and "ready" in record.getMessage() for record in caplog.records)


def test_a_card_without_a_flip_averaged_variant_is_refused_with_one_line(tiny_model_path: Path) -> None:
    with pytest.raises(ModelLoadError) as refused:
        Classifier.load(tiny_model_path, SessionSettings(), flip_averaged=True)
    message = str(refused.value)
    assert "\n" not in message
    for part in ("records no flip-averaged variant", "--tta", "FLIP_AVERAGED"):
        assert part in message


def test_the_default_answer_says_it_is_not_flip_averaged(make_client) -> None:  # type: ignore[no-untyped-def]
    body = make_client().post("/predict", content=gray_png(100), headers={"content-type": "image/png"}).json()
    assert body["model"]["flip_averaged"] is False
