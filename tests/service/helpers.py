"""Plain helpers for the service tests: image bytes, hand-made bodies and metric readings."""

from __future__ import annotations

import struct
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from service.core.pipeline import Pipeline
from service.core.predictor import Predictor
from service.core.preprocessing import preprocess_bytes
from tests.conftest import image_bytes
from tests.model_factory import tiny_probability

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Generous: only a failing test waits this long, and this box may be shared with training jobs.
WAIT_S = 30.0


def gray_png(level: int, size: tuple[int, int] = (32, 32)) -> bytes:
    """A uniform gray PNG: distinct levels give distinct tiny-model probabilities."""
    return image_bytes(Image.new("L", size, level), "PNG")


def gradient(size: tuple[int, int] = (64, 48), mode: str = "L") -> Image.Image:
    """A left-to-right ramp, so rotations and flips change the tensor."""
    return Image.linear_gradient("L").rotate(90).resize(size).convert(mode)


def expected_probability(data: bytes) -> float:
    """What the service must answer for these bytes: the tiny model on the shared preprocessing."""
    return float(tiny_probability(preprocess_bytes(data)[np.newaxis])[0])


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header (IHDR with a correct CRC) declaring width x height, with almost no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale, no interlace
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def multipart_body(
    parts: Sequence[tuple[str, str | None, bytes]], boundary: str = "test-boundary"
) -> tuple[bytes, dict[str, str]]:
    """(name, filename or None for a text field, data) parts -> body and headers, for shapes httpx will not build."""
    chunks = []
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        chunks.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def metric(client: TestClient, name: str, **labels: str) -> float:
    """One sample from GET /metrics; 0.0 when the labelled series has not been created yet."""
    text = client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def pipeline_of(client: TestClient) -> Pipeline:
    """The Pipeline that a started client's lifespan handed to its requests."""
    pipeline = client.app_state["pipeline"]
    assert isinstance(pipeline, Pipeline)
    return pipeline


def wait_until(condition: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


class InferenceGate:
    """While closed, every onnxruntime call waits in the inference thread until the test opens it."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self._open = threading.Event()
        self._open.set()

    def close(self) -> None:
        self.entered.clear()
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    def wait_entered(self) -> None:
        assert self.entered.wait(WAIT_S), "no inference started"

    def pass_through(self) -> None:
        self.entered.set()
        assert self._open.wait(WAIT_S), "the test never opened the inference gate"


def refused_while_the_queue_is_full(
    client: TestClient, gate: InferenceGate, queued_images: int, attempt: Callable[[], httpx.Response]
) -> httpx.Response:
    """Holds one /predict in inference and `queued_images` more in the batcher's queue (REQUEST_PATH=batched:
    MAX_QUEUE_IMAGES of them fill it), returns what `attempt` got meanwhile, then lets everything finish and
    checks those two were answered."""
    gate.close()
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(client.post, "/predict", files={"file": ("a.png", gray_png(10), "image/png")})
        gate.wait_entered()
        files = [("files", ("b.png", gray_png(20), "image/png"))] * queued_images
        queued = pool.submit(client.post, "/predict", files=files)
        wait_until(lambda: pipeline_of(client).predictor.queued == queued_images)
        refused = attempt()
        gate.open()
        assert running.result(WAIT_S).status_code == 200
        assert queued.result(WAIT_S).status_code == 200
    return refused


async def predict_admitted(predictor: Predictor, images: Sequence[np.ndarray]) -> list[float]:
    """Admits `images`, predicts them and releases them, as the pipeline does for a request (without its
    mapping of a refusal to 503): a predictor driven directly by a test."""
    with predictor.admission.held(len(images)):
        return await predictor.predict(images)
