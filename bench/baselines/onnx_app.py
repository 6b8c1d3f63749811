"""Baseline (b): the project's stack used the plain way.

FastAPI + onnxruntime with default session options, one `session.run` per request at batch 1,
and a full-size Pillow decode. `MODEL_PATH=... uvicorn bench.baselines.onnx_app:app`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import onnxruntime as ort
from fastapi import FastAPI, Request

from bench.baselines import decode_full


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.session = ort.InferenceSession(
        os.environ.get("MODEL_PATH", "models/model.onnx"), providers=["CPUExecutionProvider"]
    )
    yield


app = FastAPI(lifespan=lifespan)


@app.get("/readyz")
async def readyz() -> dict[str, str]:
    """uvicorn answers only after the lifespan has loaded the model."""
    return {"status": "ready"}


@app.post("/predict")
async def predict(request: Request) -> dict[str, float]:
    """A raw image body -> the positive-class probability."""
    x = decode_full(await request.body())[None]
    session: ort.InferenceSession = request.app.state.session
    probability = session.run(None, {session.get_inputs()[0].name: x})[0]
    return {"probability": float(probability[0, 0])}
