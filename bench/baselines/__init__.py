"""Two small servers to compare the service with, and the app and full-size decode they share.

Both are `async def` handlers that decode and predict inline, as FastAPI tutorials write them,
and both take the same raw image bodies the load generator sends to the service.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import numpy as np
from fastapi import FastAPI, Request
from PIL import Image

# (1, 100, 100, 1) raw 0-255 float32 -> (1, 1) positive-class probability.
Predict = Callable[[np.ndarray], np.ndarray]


def decode_full(data: bytes) -> np.ndarray:
    """The straightforward decode: every pixel, then gray, then bilinear 100x100 (no JPEG draft)."""
    with Image.open(io.BytesIO(data)) as image:
        gray = image.convert("L").resize((100, 100), Image.Resampling.BILINEAR)
    return np.asarray(gray, dtype=np.float32)[:, :, np.newaxis]


def baseline_app(load: Callable[[], Predict]) -> FastAPI:
    """`load` runs in the lifespan; `/predict` decodes and predicts inline, one image per request."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.predict = load()
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
        return {"probability": float(request.app.state.predict(x)[0, 0])}

    return app
