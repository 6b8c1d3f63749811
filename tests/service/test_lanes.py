"""service.core.lanes: one trip per image when there is room, a second only when the budget is full or the image
is large, large images in their own lane, reservations held until the decode thread really ends."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from PIL import Image

from service.core import lanes as lanes_module
from service.core.decode_memory import DEFAULT_MAX_PIXELS, DecodeBudget, DecodeBusyError, DecodeMemoryError
from service.core.input_stats import summarize
from service.core.lanes import Lanes, process
from service.core.preprocessing import estimate_decode_bytes, open_image
from tests.service.helpers import gray_png
from tests.service.test_decode_memory import released

TIMEOUT_S = 30.0
GiB = 1024**3
SMALL = gray_png(40, (30, 20))
LARGE = gray_png(90, (2000, 1500))


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, TIMEOUT_S))


def estimate(data: bytes) -> int:
    with open_image(data) as image:
        return estimate_decode_bytes(image)


class CountingExecutor(ThreadPoolExecutor):
    def __init__(self, workers: int = 1) -> None:
        super().__init__(workers)
        self.trips = 0

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        self.trips += 1
        return super().submit(*args, **kwargs)


def lanes_of(budget: DecodeBudget, common: ThreadPoolExecutor, large: ThreadPoolExecutor,
             large_image_bytes: int | None = None) -> Lanes:
    threshold = large_image_bytes if large_image_bytes is not None else (estimate(SMALL) + estimate(LARGE)) // 2
    return Lanes(common, large, budget, DEFAULT_MAX_PIXELS, threshold)


def test_the_lanes_split_at_the_estimate_between_a_small_and_a_large_image() -> None:
    assert estimate(SMALL) < estimate(LARGE)


def test_a_small_image_with_room_takes_one_trip_and_runs_then_on_the_same_thread() -> None:
    threads: list[str] = []

    def then(array: np.ndarray) -> float:
        threads.append(threading.current_thread().name)
        return float(array.mean())

    async def scenario() -> tuple[int, int, int, tuple[int, ...], float | None]:
        budget = DecodeBudget(GiB, max_wait_s=0)
        with CountingExecutor() as common, CountingExecutor() as large:
            done = await process(lanes_of(budget, common, large), SMALL, None, then)
            await asyncio.sleep(0.01)  # the release is handed to the event loop
            return common.trips, large.trips, budget.in_use, done.array.shape, done.result

    common_trips, large_trips, in_use, shape, result = run(scenario())
    assert (common_trips, large_trips, in_use, shape) == (1, 0, 0, (100, 100, 1))
    assert result == pytest.approx(40.0)
    assert len(threads) == 1


def test_a_large_image_is_decoded_in_the_large_lane_after_its_header_in_the_common_one() -> None:
    async def scenario() -> tuple[int, int, int]:
        budget = DecodeBudget(GiB, max_wait_s=0)
        with CountingExecutor() as common, CountingExecutor() as large:
            done = await process(lanes_of(budget, common, large), LARGE, None)
            assert done.array.shape == (100, 100, 1)
            assert done.result is None
            return common.trips, large.trips, await released(budget)

    assert run(scenario()) == (1, 1, True)


@pytest.mark.parametrize("data", [SMALL, LARGE], ids=["common lane", "large lane"])
@pytest.mark.parametrize("digest", [True, False])
def test_the_bookkeeping_comes_back_from_the_decode_thread(data: bytes, digest: bool) -> None:
    async def scenario() -> Any:
        budget = DecodeBudget(GiB, max_wait_s=0)
        with CountingExecutor() as common, CountingExecutor() as large:
            return await process(lanes_of(budget, common, large), data, None, digest=digest)

    done = run(scenario())
    assert done.summary == summarize(done.array)
    assert done.sha256 == (hashlib.sha256(data).hexdigest() if digest else None)


def test_small_images_keep_flowing_while_the_large_lane_is_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    started, finish = threading.Event(), threading.Event()
    decode = lanes_module.preprocess_image

    def slow_for_large(image: Image.Image) -> np.ndarray:
        if image.size == (2000, 1500):
            started.set()
            finish.wait(TIMEOUT_S)
        return decode(image)

    monkeypatch.setattr(lanes_module, "preprocess_image", slow_for_large)

    async def scenario() -> int:
        budget = DecodeBudget(GiB, max_wait_s=0)
        with ThreadPoolExecutor(1) as common, ThreadPoolExecutor(1) as large:
            lanes = lanes_of(budget, common, large)
            big = [asyncio.create_task(process(lanes, LARGE, None)) for _ in range(3)]
            await asyncio.to_thread(started.wait, TIMEOUT_S)
            small = [await process(lanes, SMALL, None) for _ in range(20)]  # one common thread, never blocked
            assert not any(task.done() for task in big)
            finish.set()
            await asyncio.gather(*big)
            return len(small)

    assert run(scenario()) == 20


def test_an_image_over_the_whole_budget_is_refused_in_the_common_lane() -> None:
    async def scenario() -> int:
        budget = DecodeBudget(estimate(LARGE) - 1, max_wait_s=0)
        with CountingExecutor() as common, CountingExecutor() as large:
            with pytest.raises(DecodeMemoryError):
                await process(lanes_of(budget, common, large), LARGE, None)
            return large.trips

    assert run(scenario()) == 0


def test_a_decode_without_room_waits_on_the_event_loop_then_decodes() -> None:
    needed = estimate(SMALL)

    async def scenario() -> tuple[int, int]:
        budget = DecodeBudget(needed, max_wait_s=TIMEOUT_S)
        await budget.acquire(needed)  # another decode holds all of it
        with CountingExecutor() as common, CountingExecutor() as large:
            decoding = asyncio.create_task(process(lanes_of(budget, common, large, GiB), SMALL, None))
            await asyncio.sleep(0.1)
            assert not decoding.done()
            budget.release(needed)
            await decoding
            return common.trips, await released(budget)

    assert run(scenario()) == (2, True)


def test_a_large_image_without_room_waits_then_is_refused_as_busy() -> None:
    async def scenario() -> None:
        budget = DecodeBudget(estimate(LARGE), max_wait_s=0.05)
        await budget.acquire(1)  # a small decode holds a byte: the large one cannot fit
        with ThreadPoolExecutor(1) as common, ThreadPoolExecutor(1) as large, pytest.raises(DecodeBusyError):
            await process(lanes_of(budget, common, large), LARGE, None)

    run(scenario())


def test_a_cancelled_caller_keeps_its_reservation_until_the_decode_thread_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    started, finish = threading.Event(), threading.Event()
    decode = lanes_module.preprocess_image

    def slow(image: Image.Image) -> np.ndarray:
        started.set()
        finish.wait(TIMEOUT_S)
        return decode(image)

    monkeypatch.setattr(lanes_module, "preprocess_image", slow)

    async def scenario() -> None:
        budget = DecodeBudget(GiB, max_wait_s=0)
        with ThreadPoolExecutor(1) as common, ThreadPoolExecutor(1) as large:
            caller = asyncio.create_task(process(lanes_of(budget, common, large), SMALL, None))
            await asyncio.to_thread(started.wait, TIMEOUT_S)
            caller.cancel()  # the request timed out; its decode thread runs on
            await asyncio.sleep(0.05)
            assert budget.in_use > 0
            finish.set()
            assert await released(budget)

    run(scenario())
