"""The decode memory budget: accounting, automatic limits, and what /predict answers when it is full."""

from __future__ import annotations

import asyncio
import re
import struct
import threading
import zlib
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.core.decode_memory import (
    DEFAULT_MAX_PIXELS,
    MIN_BUDGET_BYTES,
    SERVICE_RESERVE_BYTES,
    DecodeBudget,
    DecodeBusyError,
    DecodeMemoryError,
    decode_limits,
    pixels_within,
)
from service.core.preprocessing import ImageTooLargeError, estimate_decode_bytes, open_image
from tests.conftest import image_bytes
from tests.service.helpers import PNG_SIGNATURE, gray_png, pipeline_of, png_chunk

TIMEOUT_S = 30.0
GiB = 1024**3


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, TIMEOUT_S))


async def released(budget: DecodeBudget) -> bool:
    """Whether everything reserved is released within 10 s (a decode thread hands its release to the loop)."""
    for _ in range(1000):
        if budget.in_use == 0:
            return True
        await asyncio.sleep(0.01)
    return False


def rgba_png_claiming(width: int, height: int) -> bytes:
    """An RGBA PNG header (8-bit, colour type 6) declaring width x height, with almost no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    data = png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + data + png_chunk(b"IEND", b"")


def test_the_budget_admits_decodes_while_their_sum_fits() -> None:
    async def scenario() -> int:
        budget = DecodeBudget(100, max_wait_s=0)
        await budget.acquire(60)
        await budget.acquire(40)
        return budget.in_use

    assert run(scenario()) == 100


def test_a_decode_waits_for_a_release_then_is_admitted() -> None:
    async def scenario() -> int:
        budget = DecodeBudget(100, max_wait_s=10)
        await budget.acquire(80)
        waiting = asyncio.create_task(budget.acquire(50))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        budget.release(80)
        await waiting
        return budget.in_use

    assert run(scenario()) == 50


def test_a_small_decode_is_admitted_while_a_large_one_waits() -> None:
    async def scenario() -> None:
        budget = DecodeBudget(100, max_wait_s=10)
        await budget.acquire(60)
        large = asyncio.create_task(budget.acquire(90))
        await asyncio.sleep(0.01)
        await budget.acquire(30)  # fits now: not queued behind the large one
        assert not large.done()
        large.cancel()

    run(scenario())


@pytest.mark.parametrize(("max_wait_s", "deadline_in_s"), [(0.05, None), (10.0, 0.05), (0.0, None)])
def test_a_decode_is_refused_as_busy_when_no_room_frees_within_its_wait(
    max_wait_s: float, deadline_in_s: float | None
) -> None:
    async def scenario() -> None:
        budget = DecodeBudget(100_000_000, max_wait_s=max_wait_s)
        await budget.acquire(80_000_000)
        deadline = None if deadline_in_s is None else asyncio.get_running_loop().time() + deadline_in_s
        with pytest.raises(
            DecodeBusyError, match=r"decoding memory is busy \(80 of 100 MB in use, this image needs 50 MB\)"
        ):
            await budget.acquire(50_000_000, deadline)
        assert budget.in_use == 80_000_000

    run(scenario())


def test_an_image_that_alone_exceeds_the_budget_is_refused_as_too_large_at_once() -> None:
    async def scenario() -> None:
        budget = DecodeBudget(100_000_000, max_wait_s=10)
        with pytest.raises(
            DecodeMemoryError, match="needs an estimated 101 MB, more than the whole decode memory budget of 100 MB"
        ) as raised:
            await budget.acquire(101_000_000)
        assert isinstance(raised.value, ImageTooLargeError)  # answered 413 like the pixel limit

    run(scenario())


def test_reserve_releases_when_the_block_ends() -> None:
    async def scenario() -> int:
        budget = DecodeBudget(100, max_wait_s=0)
        async with budget.reserve(100):
            assert budget.in_use == 100
        return budget.in_use

    assert run(scenario()) == 0


def test_a_cancelled_caller_keeps_its_reservation_until_the_decode_thread_ends() -> None:
    finish = threading.Event()

    async def scenario() -> None:
        budget = DecodeBudget(100, max_wait_s=0)
        with ThreadPoolExecutor(1) as executor:
            await budget.acquire(70)
            caller = asyncio.create_task(budget.run_reserved(executor, 70, finish.wait, TIMEOUT_S))
            await asyncio.sleep(0.05)
            caller.cancel()  # the request timed out; its decode thread runs on
            await asyncio.sleep(0.05)
            assert budget.in_use == 70
            finish.set()
            assert await released(budget)

    run(scenario())


@pytest.mark.parametrize(
    ("memory", "budget"),
    [
        (1 * GiB, int((1 * GiB - SERVICE_RESERVE_BYTES) * 0.6)),
        (512 * 1024**2, int((512 * 1024**2 - SERVICE_RESERVE_BYTES) * 0.6)),
        (256 * 1024**2, MIN_BUDGET_BYTES),
    ],
)
def test_the_automatic_budget_is_a_share_of_the_memory_left_beside_the_service(memory: int, budget: int) -> None:
    limits = decode_limits(0, 0, memory)
    assert limits.decode_memory_budget_bytes == budget
    assert limits.max_pixels == min(DEFAULT_MAX_PIXELS, pixels_within(budget))


def test_settings_override_the_automatic_budget_and_pixel_limit() -> None:
    limits = decode_limits(123_000_000, 1000, 1 * GiB)
    assert (limits.decode_memory_budget_bytes, limits.max_pixels) == (123_000_000, 1000)


def test_a_large_machine_keeps_the_64_megapixel_default() -> None:
    assert decode_limits(0, 0, 64 * GiB).max_pixels == DEFAULT_MAX_PIXELS


@pytest.mark.parametrize("budget", [64 * 1024**2, 200_000_000, 422_000_000])
def test_the_automatic_pixel_limit_admits_the_largest_rgba_png_that_fits_the_budget(budget: int) -> None:
    pixels = pixels_within(budget)
    width = 4000
    fits, over = rgba_png_claiming(width, pixels // width), rgba_png_claiming(width, pixels // width + 2)
    assert estimate_decode_bytes(open_image(fits, 1 << 40)) <= budget
    assert estimate_decode_bytes(open_image(over, 1 << 40)) > budget


def post(client: TestClient, data: bytes, filename: str = "big.png") -> Any:
    return client.post("/predict", files={"file": (filename, data, "image/png")})


def test_predict_answers_413_naming_the_file_when_an_image_alone_exceeds_the_decode_budget(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(DECODE_MEMORY_BUDGET_BYTES=20_000_000, MAX_PIXELS=64_000_000)
    response = post(client, image_bytes(Image.new("RGBA", (2000, 2000), (9, 9, 9, 128)), "PNG"))
    assert response.status_code == 413, response.text
    assert re.match(
        r"file 'big.png': decoding it needs an estimated \d+ MB, more than the whole decode memory budget of 20 MB; "
        "send it downscaled",
        response.json()["detail"],
    )
    assert post(client, gray_png(80)).status_code == 200


def test_predict_answers_503_with_retry_after_while_the_decode_budget_is_held(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(DECODE_MEMORY_BUDGET_BYTES=100_000_000, DECODE_MEMORY_WAIT_S=0.05, RETRY_AFTER_S=2)
    budget = pipeline_of(client).budget
    assert client.portal is not None
    client.portal.call(budget.acquire, budget.limit_bytes)
    response = post(client, gray_png(80))
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "2"
    assert re.match(r"the service is busy: decoding memory is busy \(100 of 100 MB in use", response.json()["detail"])
    client.portal.call(budget.release, budget.limit_bytes)
    assert post(client, gray_png(80)).status_code == 200


def test_model_card_states_the_decode_limits(make_client: Callable[..., TestClient]) -> None:
    card = make_client(DECODE_MEMORY_BUDGET_BYTES=300_000_000).get("/model").json()
    assert card["limits"]["decode_memory_budget_bytes"] == 300_000_000
    assert card["limits"]["max_pixels"] == pixels_within(300_000_000)


def test_a_release_from_a_decode_thread_wakes_a_caller_waiting_for_room() -> None:
    async def scenario() -> int:
        budget = DecodeBudget(100, max_wait_s=TIMEOUT_S)
        await budget.acquire(100)
        waiting = asyncio.create_task(budget.acquire(60))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        loop = asyncio.get_running_loop()
        await asyncio.to_thread(budget.release_from_thread, 100, loop)
        await asyncio.wait_for(waiting, 5)  # woken, not left to its 30 s wait
        return budget.in_use

    assert run(scenario()) == 60


def test_a_release_from_a_decode_thread_leaves_the_loop_alone_when_nobody_waits() -> None:
    class CountingLoop:
        calls = 0

        def call_soon_threadsafe(self, *args: Any) -> None:
            self.calls += 1

    budget = DecodeBudget(100, max_wait_s=0)
    assert budget.try_acquire(40)
    loop = CountingLoop()
    budget.release_from_thread(40, loop)  # type: ignore[arg-type]
    assert (budget.in_use, loop.calls) == (0, 0)
