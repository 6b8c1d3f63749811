"""The direct request path: each image decoded and run on one lane thread, within the same admission bound,
deadline, memory budget and drain as the batcher's path; large images in their own lane."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.core import lanes as lanes_module
from service.core.direct import DirectPredictor
from service.core.failures import OverloadedError
from service.core.model import Classifier
from tests.service.helpers import (
    WAIT_S,
    InferenceGate,
    expected_probability,
    gray_png,
    metric,
    pipeline_of,
    predict_admitted,
    wait_until,
)


def post_png(client: TestClient, data: bytes, name: str = "a.png") -> object:
    return client.post("/predict", files={"file": (name, data, "image/png")})


def double(batch: np.ndarray) -> np.ndarray:
    return batch.reshape(len(batch), -1)[:, 0] * 2


def test_the_direct_predictor_answers_each_image_in_order_on_its_own_threads() -> None:
    async def scenario() -> list[float]:
        predictor = DirectPredictor(double, max_in_flight=8, threads=2)
        predictor.start()
        try:
            return await predict_admitted(predictor, [np.full((100, 100, 1), v, np.float32) for v in (1, 2, 3)])
        finally:
            await predictor.stop()

    assert asyncio.run(scenario()) == [2.0, 4.0, 6.0]


def test_a_lone_image_takes_the_lone_call_and_images_under_load_the_concurrent_one() -> None:
    calls: list[str] = []

    def named(name: str):
        def run(batch: np.ndarray) -> np.ndarray:
            calls.append(name)
            return double(batch)

        return run

    async def scenario() -> None:
        predictor = DirectPredictor(named("infer"), lone=named("lone"), max_in_flight=8, threads=2)
        predictor.start()
        await predict_admitted(predictor, [np.ones((100, 100, 1), np.float32)])
        await predict_admitted(predictor, [np.ones((100, 100, 1), np.float32)] * 3)
        await predictor.stop()

    asyncio.run(scenario())
    assert calls == ["lone", "infer", "infer", "infer"]


def test_the_direct_predictor_admits_a_request_whole_or_refuses_it() -> None:
    async def scenario() -> int:
        predictor = DirectPredictor(double, max_in_flight=3, threads=1)
        predictor.start()
        predictor.admission.admit(2)
        with pytest.raises(OverloadedError, match="2 images are in flight"):
            predictor.admission.admit(2)
        predictor.admission.admit(1)
        in_flight = predictor.queued
        predictor.admission.release(3)
        await predictor.stop()
        return in_flight

    assert asyncio.run(scenario()) == 3


def test_the_direct_predictor_stop_waits_for_admitted_images_then_refuses() -> None:
    async def scenario() -> tuple[bool, bool]:
        predictor = DirectPredictor(double, max_in_flight=3, threads=1)
        predictor.start()
        predictor.admission.admit(1)
        stopping = asyncio.create_task(predictor.stop())
        await asyncio.sleep(0.05)
        waited = not stopping.done()
        with pytest.raises(OverloadedError, match="shutting down"):
            predictor.admission.admit(1)
        predictor.admission.release(1)
        await stopping
        return waited, predictor.admission.accepting

    assert asyncio.run(scenario()) == (True, False)


def test_an_image_is_decoded_and_run_on_one_decode_thread(
    make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []
    infer = Classifier.infer

    def recording(self: Classifier, batch: np.ndarray) -> np.ndarray:
        threads.append(threading.current_thread().name)
        return infer(self, batch)

    monkeypatch.setattr(Classifier, "infer", recording)
    client = make_client()
    threads.clear()  # the load's measurement and warm-up
    files = [("files", (f"{i}.png", gray_png(i * 50), "image/png")) for i in range(3)]
    response = client.post("/predict", files=files)
    assert response.status_code == 200
    assert [p["probability"] for p in response.json()["predictions"]] == [
        pytest.approx(expected_probability(gray_png(i * 50)), abs=1e-6) for i in range(3)
    ]
    assert len(threads) == 3
    assert all(name.startswith("decode") for name in threads)
    assert client.get("/model").json()["request_path"]["path"] == "direct"


def test_the_direct_path_answers_503_with_retry_after_beyond_max_queue_images(
    make_client: Callable[..., TestClient], gate: InferenceGate
) -> None:
    client = make_client(MAX_QUEUE_IMAGES=1, RETRY_AFTER_S=4)
    gate.close()
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(post_png, client, gray_png(10))
        gate.wait_entered()
        wait_until(lambda: pipeline_of(client).predictor.queued == 1)
        refused = post_png(client, gray_png(20))
        gate.open()
        assert running.result(WAIT_S).status_code == 200
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "4"
    assert refused.json()["detail"].startswith("the service is busy: overloaded (1 images are in flight)")
    assert metric(client, "images_rejected_total", reason="overloaded") == 1
    assert post_png(client, gray_png(30)).status_code == 200


def test_the_direct_path_answers_503_when_a_request_outlasts_its_timeout(
    make_client: Callable[..., TestClient], gate: InferenceGate
) -> None:
    client = make_client(REQUEST_TIMEOUT_S=0.5)
    gate.close()
    try:
        response = post_png(client, gray_png(10))
    finally:
        gate.open()
    assert response.status_code == 503
    assert response.json()["detail"] == "the service is busy: the request did not finish in time; retry after 1 s"
    wait_until(lambda: pipeline_of(client).predictor.queued == 0)
    assert post_png(client, gray_png(30)).status_code == 200


def test_small_images_are_answered_while_a_large_one_holds_the_large_lane(
    make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    large_size = (1200, 900)
    started, finish = threading.Event(), threading.Event()
    decode = lanes_module.preprocess_image

    def slow_for_large(image: Image.Image) -> np.ndarray:
        if image.size == large_size:
            started.set()
            finish.wait(WAIT_S)
        return decode(image)

    monkeypatch.setattr(lanes_module, "preprocess_image", slow_for_large)
    # A 1200 x 900 gray PNG estimates 18.5 MB, a 32 x 32 one 8.4 MB (mostly the fixed decode overhead).
    client = make_client(LARGE_IMAGE_BYTES=12_000_000, LARGE_LANE_THREADS=1, DECODE_THREADS=1)
    with ThreadPoolExecutor(1) as pool:
        large = pool.submit(post_png, client, gray_png(80, large_size), "large.png")
        assert started.wait(WAIT_S)
        small = [post_png(client, gray_png(level)) for level in (10, 20, 30, 40)]
        assert not large.done()
        finish.set()
        assert large.result(WAIT_S).status_code == 200
    assert [r.status_code for r in small] == [200] * 4
