"""Decoding in two lanes by estimated cost, each decode within the memory budget, optionally running the model
on the same thread.

An image whose estimated decode memory (the header's width x height x bytes per pixel, as the budget reads it)
is over LARGE_IMAGE_BYTES is decoded in the large lane, a pool of LARGE_LANE_THREADS threads; every other image
in the common lane. Measured before the lanes (BENCHMARKS.md): four clients posting ELPV cells had p99 55 ms
alone and 16.6 s beside two clients sending 16 x 64 MP PNGs, because every decode waited in one
first-come-first-served pool. Now a large image costs the common lane one header read, then waits in its own
lane (at most until its deadline: 503 with Retry-After), and small images never queue behind it.

One trip per image in the common case: the header, the estimate, the reservation, the decode and (on the direct
path) the inference run together on one thread. Only a large image, or one that finds the budget full, takes
a second trip. The per-image bookkeeping rides the same trip: the input's drift summary and, when asked, the
file's sha256 for the prediction log, so the event loop only appends them (no numpy, no hashing on the loop).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
from PIL import Image

from service.core.config import Settings
from service.core.cpu import available_cpus
from service.core.decode_memory import DecodeBudget
from service.core.input_stats import ImageSummary, summarize
from service.core.preprocessing import estimate_decode_bytes, open_image, preprocess_image

T = TypeVar("T")


# Threads per CPU of the common lane when DECODE_THREADS is auto. Each thread spends part of every image waiting:
# for the GIL while the event loop holds it, for its OpenVINO stream. With one thread per CPU the cores idled
# meanwhile (1.71 cores busy at 16 connections on 2 vCPUs against baseline (c)'s 1.96); with two, 1.87-1.96, and
# +11-14 % requests/s on ELPV cells and 1080p photos; four or eight per CPU gained nothing more (BENCHMARKS.md).
LANE_THREADS_PER_CPU = 2


def lane_threads(settings: Settings) -> int:
    """The common decode lane's threads (DECODE_THREADS, auto = LANE_THREADS_PER_CPU per CPU), which on the direct
    path also run the model: the pool, the direct predictor and the shadow's idea of spare capacity follow it."""
    return settings.decode_threads or LANE_THREADS_PER_CPU * available_cpus()


@dataclass(frozen=True)
class Processed(Generic[T]):
    """One image's model input and what `then` made of it on the same thread (its probability, or None), with
    the bookkeeping done there too: the input's drift summary and the file's sha256 (None unless asked)."""

    array: np.ndarray
    result: T | None
    summary: ImageSummary
    sha256: str | None = None


@dataclass(frozen=True)
class Lanes:
    """The two decode pools and the limits they share; built once per process by the pipeline."""

    common: Executor
    large: Executor
    budget: DecodeBudget
    max_pixels: int
    large_image_bytes: int


@dataclass(frozen=True)
class _Deferred:
    """The header was read on a common-lane thread; the decode itself goes elsewhere (the large lane) or later
    (when the budget has room)."""

    image: Image.Image
    nbytes: int
    large: bool
    sha256: str | None


def _decode(
    image: Image.Image, then: Callable[[np.ndarray], T] | None, sha256: str | None,
    release: Callable[[], None] | None = None,
) -> Processed[T]:
    """On a lane thread whose reservation is held: decode, `release` it (when the thread owns it), run `then`
    and summarise the input."""
    try:
        with image:
            array = preprocess_image(image)
    finally:
        if release is not None:
            release()
    return Processed(array, then(array) if then is not None else None, summarize(array), sha256)


def _decode_and_then(
    image: Image.Image, nbytes: int, budget: DecodeBudget, loop: asyncio.AbstractEventLoop,
    then: Callable[[np.ndarray], T] | None, sha256: str | None,
) -> Processed[T]:
    """With nbytes reserved by this thread: released as soon as the decode ends (before any inference), whether
    or not its caller still waits."""
    return _decode(image, then, sha256, lambda: budget.release_from_thread(nbytes, loop))


def _open(
    data: bytes, lanes: Lanes, loop: asyncio.AbstractEventLoop, then: Callable[[np.ndarray], T] | None,
    digest: bool,
) -> Processed[T] | _Deferred:
    """On a common-lane thread: header, estimate, the file's sha256 (when `digest`; hashlib releases the GIL),
    and everything else here when the image is small and the budget has room now."""
    image = open_image(data, lanes.max_pixels)
    try:
        sha256 = hashlib.sha256(data).hexdigest() if digest else None
        nbytes = estimate_decode_bytes(image)
        large = nbytes > lanes.large_image_bytes
        if large:
            lanes.budget.check_fits_alone(nbytes)  # a 413 needs no trip to the large lane
            return _Deferred(image, nbytes, large=True, sha256=sha256)
        if not lanes.budget.try_acquire(nbytes):
            return _Deferred(image, nbytes, large=False, sha256=sha256)
    except BaseException:
        image.close()
        raise
    return _decode_and_then(image, nbytes, lanes.budget, loop, then, sha256)


def _reserve_now(
    deferred: _Deferred, lanes: Lanes, loop: asyncio.AbstractEventLoop, then: Callable[[np.ndarray], T] | None
) -> Processed[T] | _Deferred:
    """On a large-lane thread: the decode when the budget has room now, else back to the event loop to wait."""
    try:
        reserved = lanes.budget.try_acquire(deferred.nbytes)
    except BaseException:
        deferred.image.close()
        raise
    if not reserved:
        return deferred
    return _decode_and_then(deferred.image, deferred.nbytes, lanes.budget, loop, then, deferred.sha256)


async def process(
    lanes: Lanes, data: bytes, deadline: float | None, then: Callable[[np.ndarray], T] | None = None,
    *, digest: bool = False,
) -> Processed[T]:
    """Image bytes -> model input (and `then` of it, on the same thread, and with `digest` the file's sha256),
    the decode admitted by the budget in the lane its cost calls for.

    Raises the ImageError family (DecodeMemoryError, a 413, when the image alone is over the budget) and
    DecodeBusyError (503) when the budget stays full past its wait. The caller bounds the whole by its deadline."""
    loop = asyncio.get_running_loop()
    outcome = await loop.run_in_executor(lanes.common, _open, data, lanes, loop, then, digest)
    if isinstance(outcome, Processed):
        return outcome
    lane = lanes.large if outcome.large else lanes.common
    try:
        if outcome.large:
            outcome = await loop.run_in_executor(lane, _reserve_now, outcome, lanes, loop, then)
            if isinstance(outcome, Processed):
                return outcome
        await lanes.budget.acquire(outcome.nbytes, deadline)
    except BaseException:
        outcome.image.close()
        raise
    # Reserved by the event loop: run_reserved releases the bytes when the thread ends.
    return await lanes.budget.run_reserved(  # type: ignore[arg-type]
        lane, outcome.nbytes, _decode, outcome.image, then, outcome.sha256
    )
