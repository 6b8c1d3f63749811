"""Two small servers to compare the service with, and the full-size decode they share.

Both are `async def` handlers that decode and predict inline, as FastAPI tutorials write them,
and both take the same raw image bodies the load generator sends to the service.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def decode_full(data: bytes) -> np.ndarray:
    """The straightforward decode: every pixel, then gray, then bilinear 100x100 (no JPEG draft)."""
    with Image.open(io.BytesIO(data)) as image:
        gray = image.convert("L").resize((100, 100), Image.Resampling.BILINEAR)
    return np.asarray(gray, dtype=np.float32)[:, :, np.newaxis]
