"""Baseline (c): a skilled 25-line server, the one the service must never be slower than.

FastAPI + OpenVINO: plain `def` handlers (FastAPI's thread pool), a JPEG draft decode, one THROUGHPUT
compilation shared by all threads with one infer request per thread. No batcher, no queue, no decode pool,
no admission control, no limits. `MODEL_PATH=... uvicorn bench.baselines.openvino_app:app`.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import numpy as np
import openvino as ov
from fastapi import Body, FastAPI, Request
from PIL import Image


def decode_draft(data: bytes) -> np.ndarray:
    """A JPEG decoded at a reduced DCT scale (a no-op for PNG), then gray and bilinear 100x100."""
    with Image.open(io.BytesIO(data)) as image:
        image.draft("L", (100, 100))
        gray = image.convert("L").resize((100, 100), Image.Resampling.BILINEAR)
    return np.asarray(gray, dtype=np.float32)[None, :, :, None]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    path = os.environ.get("MODEL_PATH", "models/model.int8.onnx")
    app.state.compiled = ov.Core().compile_model(path, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT"})
    app.state.local = threading.local()
    yield


app = FastAPI(lifespan=lifespan)


@app.get("/readyz")
def readyz() -> dict[str, str]:
    """uvicorn answers only after the lifespan has compiled the model."""
    return {"status": "ready"}


@app.post("/predict")
def predict(request: Request, body: Annotated[bytes, Body(media_type="image/*")]) -> dict[str, float]:
    """A raw image body -> the positive-class probability, on this thread's own infer request."""
    local = request.app.state.local
    if not hasattr(local, "infer"):
        local.infer = request.app.state.compiled.create_infer_request()
    local.infer.infer({0: decode_draft(body)})
    return {"probability": float(local.infer.get_output_tensor(0).data[0, 0])}
