"""MicroBatcher on its own, then batching and overload through HTTP."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.core.batching import MicroBatcher
from service.core.failures import OverloadedError
from tests.service.helpers import (
    InferenceGate,
    expected_probability,
    gray_png,
    metric,
    pipeline_of,
    predict_admitted,
    refused_while_the_queue_is_full,
    wait_until,
)

TIMEOUT_S = 30.0


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coroutine, TIMEOUT_S))


def image(value: float) -> np.ndarray:
    return np.full((2, 2, 1), value, np.float32)


class RecordingModel:
    """Answers each image's first pixel times 10, records batch sizes, and can be held like InferenceGate."""

    def __init__(self) -> None:
        self.batches: list[list[float]] = []
        self.gate = InferenceGate()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.gate.pass_through()
        self.batches.append([float(v) for v in x[:, 0, 0, 0]])
        return x[:, 0, 0, 0] * 10


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.001)


async def held_first_call(batcher: MicroBatcher, model: RecordingModel) -> asyncio.Task[list[float]]:
    """Starts one call and returns once the model is holding it, so later calls queue up."""
    model.gate.close()
    task = asyncio.create_task(predict_admitted(batcher, [image(0)]))
    await asyncio.to_thread(model.gate.wait_entered)
    return task


def test_microbatcher_answers_each_caller_with_its_own_results_in_order() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        batcher = MicroBatcher(model, max_batch_size=4, max_wait_s=0.02, max_queue=64)
        batcher.start()
        requests = [[image(i), image(i + 0.5)] for i in range(6)] + [[image(i + 100)] for i in range(6)]
        answers = await asyncio.gather(*(predict_admitted(batcher, r) for r in requests))
        await batcher.stop()
        assert answers == [[float(x[0, 0, 0]) * 10 for x in r] for r in requests]
        assert max(len(batch) for batch in model.batches) == 4
        assert len(model.batches) < len(requests)

    run(scenario())


def test_microbatcher_batches_what_queued_while_a_batch_ran_up_to_max_batch_size() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        sizes: list[int] = []
        batcher = MicroBatcher(model, max_batch_size=2, max_wait_s=0, max_queue=64, on_batch=sizes.append)
        batcher.start()
        first = await held_first_call(batcher, model)
        rest = [asyncio.create_task(predict_admitted(batcher, [image(i)])) for i in (1, 2, 3, 4, 5)]
        await until(lambda: batcher.queued == 5)
        model.gate.open()
        assert await first == [0.0]
        assert [await task for task in rest] == [[10.0], [20.0], [30.0], [40.0], [50.0]]
        await batcher.stop()
        assert model.batches == [[0.0], [1.0, 2.0], [3.0, 4.0], [5.0]]
        assert sizes == [1, 2, 2, 1]

    run(scenario())


def test_microbatcher_hands_a_model_error_to_every_caller_of_the_batch() -> None:
    async def scenario() -> None:
        def broken(x: np.ndarray) -> np.ndarray:
            raise RuntimeError("onnxruntime exploded")

        sizes: list[int] = []
        batcher = MicroBatcher(broken, max_batch_size=8, max_wait_s=0.02, max_queue=64, on_batch=sizes.append)
        batcher.start()
        calls = (predict_admitted(batcher, [image(i)]) for i in range(3))
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert len(results) == 3
        for result in results:
            assert isinstance(result, RuntimeError)
            assert str(result) == "onnxruntime exploded"
        assert sizes == []
        await batcher.stop()

    run(scenario())


def test_microbatcher_keeps_working_after_a_failed_batch() -> None:
    async def scenario() -> None:
        calls = 0

        def flaky(x: np.ndarray) -> np.ndarray:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("first batch fails")
            return x[:, 0, 0, 0]

        batcher = MicroBatcher(flaky, max_batch_size=8, max_wait_s=0, max_queue=64)
        batcher.start()
        with pytest.raises(RuntimeError, match="first batch fails"):
            await predict_admitted(batcher, [image(1)])
        assert await predict_admitted(batcher, [image(2)]) == [2.0]
        await batcher.stop()

    run(scenario())


def test_microbatcher_refuses_requests_that_do_not_fit_the_queue() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        batcher = MicroBatcher(model, max_batch_size=8, max_wait_s=0, max_queue=3)
        batcher.start()
        first = await held_first_call(batcher, model)
        queued = asyncio.create_task(predict_admitted(batcher, [image(1), image(2)]))
        await until(lambda: batcher.queued == 2)
        # All images of a request are admitted together or refused together.
        with pytest.raises(OverloadedError, match="2 images are queued"):
            await predict_admitted(batcher, [image(3), image(4)])
        assert batcher.queued == 2
        last = asyncio.create_task(predict_admitted(batcher, [image(5)]))
        await until(lambda: batcher.queued == 3)
        with pytest.raises(OverloadedError, match="3 images are queued"):
            await predict_admitted(batcher, [image(6)])
        model.gate.open()
        assert (await first, await queued, await last) == ([0.0], [10.0, 20.0], [50.0])
        await batcher.stop()

    run(scenario())


def test_microbatcher_stop_answers_everything_already_queued_then_refuses() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        batcher = MicroBatcher(model, max_batch_size=2, max_wait_s=0, max_queue=64)
        batcher.start()
        first = await held_first_call(batcher, model)
        queued = [asyncio.create_task(predict_admitted(batcher, [image(i)])) for i in (1, 2, 3)]
        await until(lambda: batcher.queued == 3)
        stopping = asyncio.create_task(batcher.stop())
        await asyncio.sleep(0.01)
        assert not stopping.done()
        with pytest.raises(OverloadedError, match="shutting down"):
            await predict_admitted(batcher, [image(9)])
        model.gate.open()
        await stopping
        assert await first == [0.0]
        assert [await task for task in queued] == [[10.0], [20.0], [30.0]]
        assert sorted(v for batch in model.batches for v in batch) == [0.0, 1.0, 2.0, 3.0]

    run(scenario())


def test_microbatcher_stop_before_start_is_harmless() -> None:
    async def scenario() -> None:
        batcher = MicroBatcher(RecordingModel(), max_batch_size=2, max_wait_s=0, max_queue=4)
        await batcher.stop()
        with pytest.raises(OverloadedError, match="shutting down"):
            await predict_admitted(batcher, [image(1)])

    run(scenario())


def test_microbatcher_skips_callers_cancelled_while_queued() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        batcher = MicroBatcher(model, max_batch_size=8, max_wait_s=0, max_queue=64)
        batcher.start()
        first = await held_first_call(batcher, model)
        gone = asyncio.create_task(predict_admitted(batcher, [image(1), image(2)]))
        kept = asyncio.create_task(predict_admitted(batcher, [image(3)]))
        await until(lambda: batcher.queued == 3)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        model.gate.open()
        assert await first == [0.0]
        assert await kept == [30.0]
        await batcher.stop()
        assert model.batches == [[0.0], [3.0]]

    run(scenario())


def test_microbatcher_does_not_run_a_batch_whose_callers_all_left() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        batcher = MicroBatcher(model, max_batch_size=8, max_wait_s=0, max_queue=64)
        batcher.start()
        first = await held_first_call(batcher, model)
        gone = asyncio.create_task(predict_admitted(batcher, [image(7)]))
        await until(lambda: batcher.queued == 1)
        gone.cancel()
        model.gate.open()
        await first
        await batcher.stop()
        assert model.batches == [[0.0]]

    run(scenario())


def post_png(client: TestClient, data: bytes) -> httpx.Response:
    return client.post("/predict", files={"file": ("cell.png", data, "image/png")})


def test_concurrent_requests_each_get_their_own_image_result(make_client: Callable[..., TestClient]) -> None:
    client = make_client(MAX_BATCH_WAIT_S=0.04, MAX_BATCH_SIZE=8, REQUEST_PATH="batched")
    images = [gray_png(level) for level in range(40, 240, 8)]  # 25 brightnesses, 25 probabilities
    start = threading.Barrier(len(images))

    def send(data: bytes) -> float:
        start.wait(TIMEOUT_S)
        response = post_png(client, data)
        assert response.status_code == 200, response.text
        return response.json()["predictions"][0]["probability"]

    with ThreadPoolExecutor(len(images)) as pool:
        got = list(pool.map(send, images))
    assert got == pytest.approx([expected_probability(data) for data in images], abs=1e-6)
    assert len(set(got)) == len(images)
    batches = metric(client, "inference_batch_size_count")
    assert metric(client, "inference_batch_size_sum") == len(images)
    # Some requests really shared an onnxruntime call, and none exceeded MAX_BATCH_SIZE.
    assert batches < len(images)
    assert metric(client, "inference_batch_size_bucket", le="1.0") < batches
    assert metric(client, "inference_batch_size_bucket", le="8.0") == batches


def test_requests_queued_behind_a_running_batch_are_batched_together(
    make_client: Callable[..., TestClient], gate: InferenceGate
) -> None:
    client = make_client(MAX_BATCH_SIZE=8, REQUEST_PATH="batched")
    gate.close()
    images = [gray_png(level) for level in (30, 60, 90, 120, 150, 180, 210)]
    with ThreadPoolExecutor(len(images)) as pool:
        first = pool.submit(post_png, client, images[0])
        gate.wait_entered()
        rest = [pool.submit(post_png, client, data) for data in images[1:]]
        wait_until(lambda: pipeline_of(client).predictor.queued == len(rest))
        gate.open()
        responses = [first.result(TIMEOUT_S)] + [future.result(TIMEOUT_S) for future in rest]
    got = [response.json()["predictions"][0]["probability"] for response in responses]
    assert got == pytest.approx([expected_probability(data) for data in images], abs=1e-6)
    assert metric(client, "inference_batch_size_count") == 2
    assert metric(client, "inference_batch_size_bucket", le="4.0") == 1  # the first image alone, then six


def test_predict_answers_503_with_retry_after_when_the_queue_is_full(
    make_client: Callable[..., TestClient], gate: InferenceGate
) -> None:
    client = make_client(MAX_QUEUE_IMAGES=2, RETRY_AFTER_S=7, REQUEST_PATH="batched")
    refused = refused_while_the_queue_is_full(client, gate, 2, lambda: post_png(client, gray_png(30)))
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "7"
    assert refused.json()["detail"] == "the service is busy: overloaded (2 images are queued); retry after 7 s"
    assert metric(client, "images_rejected_total", reason="overloaded") == 1
    # Once the queue drains, the same request goes through.
    assert post_png(client, gray_png(30)).status_code == 200


def test_predict_answers_503_when_inference_outlasts_the_request_timeout(
    make_client: Callable[..., TestClient], gate: InferenceGate
) -> None:
    client = make_client(REQUEST_TIMEOUT_S=0.5, REQUEST_PATH="batched")
    gate.close()
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(post_png, client, gray_png(10))
        gate.wait_entered()
        queued = post_png(client, gray_png(20))
        abandoned = running.result(TIMEOUT_S)
    for response in (abandoned, queued):
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json()["detail"] == ("the service is busy: inference did not finish in time; retry after 1 s")
    gate.open()
    # A call straight to the batcher queues behind both: once it is answered, the queue is drained.
    # (Not over HTTP: on a busy machine a fresh request could miss the 0.5 s deadline too.)
    pipeline = pipeline_of(client)
    assert client.portal is not None
    assert client.portal.call(predict_admitted, pipeline.predictor, [np.zeros((100, 100, 1), np.float32)]) == [
        pytest.approx(expected_probability(gray_png(0)), abs=1e-6)
    ]
    # The held batch finished for nobody; the image that timed out in the queue was skipped, not run.
    assert metric(client, "inference_batch_size_count") == 2
    assert metric(client, "images_predicted_total") == 2


def test_microbatcher_runs_a_lone_request_at_once_without_queueing_it() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        sizes: list[int] = []
        batcher = MicroBatcher(model, max_batch_size=2, max_wait_s=0, max_queue=64, on_batch=sizes.append)
        batcher.start()
        model.gate.close()
        lone = asyncio.create_task(predict_admitted(batcher, [image(1), image(2)]))
        await asyncio.to_thread(model.gate.wait_entered)
        assert batcher.queued == 0
        # Too many images for one batch: queued and split, even when idle.
        queued = asyncio.create_task(predict_admitted(batcher, [image(3), image(4), image(5)]))
        await until(lambda: batcher.queued == 3)
        model.gate.open()
        assert (await lone, await queued) == ([10.0, 20.0], [30.0, 40.0, 50.0])
        await batcher.stop()
        assert model.batches == [[1.0, 2.0], [3.0, 4.0], [5.0]]
        assert sizes == [2, 2, 1]

    run(scenario())


def test_microbatcher_waits_for_a_lone_run_whose_caller_left_before_the_next_batch() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        active, most = 0, 0
        inner = model.__call__

        def counting(x: np.ndarray) -> np.ndarray:
            nonlocal active, most
            active += 1
            most = max(most, active)
            try:
                return inner(x)
            finally:
                active -= 1

        sizes: list[int] = []
        batcher = MicroBatcher(counting, max_batch_size=8, max_wait_s=0, max_queue=64, on_batch=sizes.append)
        batcher.start()
        first = await held_first_call(batcher, model)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        # The model is still held: a new request queues instead of taking the lone path.
        second = asyncio.create_task(predict_admitted(batcher, [image(1)]))
        await until(lambda: batcher.queued == 1)
        model.gate.open()
        assert await second == [10.0]
        await batcher.stop()
        assert (model.batches, most, sizes) == ([[0.0], [1.0]], 1, [1, 1])

    run(scenario())
