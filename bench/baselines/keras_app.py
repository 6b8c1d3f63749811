"""Baseline (a): the tutorial way.

FastAPI + the Keras model, `model.predict` per request, full-size Pillow decode.
`KERAS_WEIGHTS=... uvicorn bench.baselines.keras_app:app`; without weights the untrained seed CNN
(the same arithmetic, so the same speed).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import keras
from fastapi import FastAPI, Request

from bench.baselines import decode_full
from training.model import make_model


def load_model(weights: str) -> keras.Model:
    if weights.endswith(".keras"):
        return keras.models.load_model(weights)
    model = make_model()
    if weights:
        model.load_weights(weights)
    return model


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.model = load_model(os.environ.get("KERAS_WEIGHTS", ""))
    yield


app = FastAPI(lifespan=lifespan)


@app.get("/readyz")
async def readyz() -> dict[str, str]:
    """uvicorn answers only after the lifespan has built the model."""
    return {"status": "ready"}


@app.post("/predict")
async def predict(request: Request) -> dict[str, float]:
    """A raw image body -> the positive-class probability."""
    x = decode_full(await request.body())[None]
    probability = request.app.state.model.predict(x, verbose=0)
    return {"probability": float(probability[0, 0])}
