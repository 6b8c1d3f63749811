"""Baseline (a): the tutorial way.

FastAPI + the Keras model, `model.predict` per request, full-size Pillow decode.
`KERAS_WEIGHTS=... uvicorn bench.baselines.keras_app:app`; without weights the untrained seed CNN
(the same arithmetic, so the same speed).
"""

from __future__ import annotations

import os
from functools import partial

import keras

from bench.baselines import Predict, baseline_app
from training.model import make_model


def load_model(weights: str) -> keras.Model:
    if weights.endswith(".keras"):
        return keras.models.load_model(weights)
    model = make_model()
    if weights:
        model.load_weights(weights)
    return model


def load_predict() -> Predict:
    return partial(load_model(os.environ.get("KERAS_WEIGHTS", "")).predict, verbose=0)


app = baseline_app(load_predict)
