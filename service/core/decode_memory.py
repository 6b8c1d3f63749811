"""A memory budget for decoding: each upload's estimated peak is reserved before its decode starts.

The pixel limit alone bounds pixels, not bytes: one 265 KB PNG of 64 M nearly uniform RGBA pixels takes
1.2 GB to decode, and with only the pixel limit it OOM-killed a `--memory 1g` container. Here decodes are admitted only
while the sum of their estimates (service.core.preprocessing.estimate_decode_bytes, an upper bound measured
per format in BENCHMARKS.md) stays within a budget that follows the container's memory limit.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from contextlib import asynccontextmanager, suppress
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from service.core.failures import OverloadedError
from service.core.preprocessing import (
    DECODE_OVERHEAD_BYTES,
    DEFAULT_MAX_PIXELS,
    STRIP_BYTES_PER_PIXEL,
    STRIP_PIXELS,
    ImageTooLargeError,
)

T = TypeVar("T")
MiB = 1024 * 1024
MB = 1_000_000

# What the rest of the process needs beside decoding. Measured: the Docker image's RSS after warm-up with
# the default model is 390 MiB on OpenVINO and 343 MiB on onnxruntime (VmRSS of PID 1, --memory 1g); the
# reserve leaves it below that because the 40 % beside the budget absorbs the rest: under 16 concurrent
# 64 MP uploads the peak was 583 MiB on OpenVINO and 853 MiB on onnxruntime at --memory 1g (RELIABILITY.md).
SERVICE_RESERVE_BYTES = 320 * MiB
# Of what is left, decoding may take this share; the rest absorbs upload bodies and allocator slack. At
# --memory 1g that is a 443 MB budget; 16 concurrent 64 MP uploads peaked at 527 MB RSS (RELIABILITY.md).
BUDGET_FRACTION = 0.6
# Below this nothing useful decodes (a 12 MP photo's JPEG estimate is ~60 MB); also the floor when the
# limit is tiny.
MIN_BUDGET_BYTES = 64 * MiB
# With no cgroup limit and no /proc/meminfo (not Linux), the budget of a 2 GB container.
FALLBACK_MEMORY_BYTES = 2048 * MiB
# The costliest common path per pixel (RGBA or EXIF-rotated PNG: 4 decoded + 2 gray bytes), which sets the
# automatic MAX_PIXELS: every PNG within it fits the budget alone.
WORST_PNG_BYTES_PER_PIXEL = 6


class DecodeMemoryError(ImageTooLargeError):
    """The image alone needs more decoding memory than the whole budget (413)."""


class DecodeBusyError(OverloadedError):
    """Other decodes hold the budget past the wait; the caller should answer 503 with Retry-After."""


@dataclass(frozen=True)
class DecodeLimits:
    """The limits decoding runs under, and where they came from (start-up log and GET /model)."""

    memory_bytes: int | None
    memory_source: str
    decode_memory_budget_bytes: int
    max_pixels: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def pixels_within(budget_bytes: int) -> int:
    """The largest RGBA PNG (in pixels) whose estimate_decode_bytes fits budget_bytes."""
    formula = (budget_bytes - DECODE_OVERHEAD_BYTES) * 16 // 17 - STRIP_PIXELS * STRIP_BYTES_PER_PIXEL
    return max(1, formula // WORST_PNG_BYTES_PER_PIXEL)


def decode_limits(budget_bytes: int, max_pixels: int, memory_bytes: int | None) -> DecodeLimits:
    """0 means automatic for both settings: the budget is a share of the memory left beside the service,
    and the pixel limit the largest RGBA PNG that fits it (at most the 64 M pixel default)."""
    memory_source = "cgroup memory limit or MemTotal" if memory_bytes is not None else "unknown (fallback)"
    if not budget_bytes:
        left = (memory_bytes or FALLBACK_MEMORY_BYTES) - SERVICE_RESERVE_BYTES
        budget_bytes = max(MIN_BUDGET_BYTES, int(left * BUDGET_FRACTION))
    if not max_pixels:
        max_pixels = min(DEFAULT_MAX_PIXELS, pixels_within(budget_bytes))
    return DecodeLimits(memory_bytes, memory_source, budget_bytes, max_pixels)


class DecodeBudget:
    """Admits decodes while the sum of their reserved bytes stays within limit_bytes.

    Knows nothing of HTTP. Not first-come-first-served on purpose: a large image waiting for room must not
    hold back the small ones behind it; it waits at most max_wait_s (and never past its deadline), then
    DecodeBusyError.
    """

    def __init__(self, limit_bytes: int, max_wait_s: float) -> None:
        self.limit_bytes = limit_bytes
        self.max_wait_s = max_wait_s
        self._in_use = 0
        self._released = asyncio.Event()
        # Callers of acquire waiting for room: a decode thread's release wakes the event loop only for them.
        self._waiters = 0
        # try_acquire and release_from_thread run on decode threads; everything else on the event loop.
        self._lock = threading.Lock()

    @property
    def in_use(self) -> int:
        return self._in_use

    def check_fits_alone(self, nbytes: int) -> None:
        if nbytes > self.limit_bytes:
            raise DecodeMemoryError(
                f"decoding it needs an estimated {nbytes / MB:.0f} MB, more than the whole decode memory budget "
                f"of {self.limit_bytes / MB:.0f} MB; send it downscaled (the cost grows with width x height "
                "and bytes per pixel), or run the service with more memory or DECODE_MEMORY_BUDGET_BYTES"
            )

    def _take(self, nbytes: int) -> bool:
        with self._lock:
            if self._in_use + nbytes > self.limit_bytes:
                return False
            self._in_use += nbytes
            return True

    def _take_or_wait(self, nbytes: int) -> asyncio.Event | None:
        """None when nbytes were reserved; else the event the next release sets, with this caller counted as
        waiting (both under the lock, so a release from a thread cannot slip between them unseen)."""
        with self._lock:
            if self._in_use + nbytes <= self.limit_bytes:
                self._in_use += nbytes
                return None
            self._waiters += 1
            return self._released

    def try_acquire(self, nbytes: int) -> bool:
        """Reserves nbytes now if they fit, from any thread; False when the caller must wait (acquire)."""
        self.check_fits_alone(nbytes)
        return self._take(nbytes)

    async def acquire(self, nbytes: int, deadline: float | None = None) -> None:
        """Reserves nbytes, waiting for releases until min(deadline, now + max_wait_s) (loop time)."""
        self.check_fits_alone(nbytes)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.max_wait_s
        if deadline is not None:
            give_up = min(give_up, deadline)
        while (released := self._take_or_wait(nbytes)) is not None:
            try:
                async with asyncio.timeout_at(give_up):
                    await released.wait()
            except TimeoutError:
                raise DecodeBusyError(
                    f"decoding memory is busy ({self._in_use / MB:.0f} of {self.limit_bytes / MB:.0f} MB in use, "
                    f"this image needs {nbytes / MB:.0f} MB)"
                ) from None
            finally:
                with self._lock:
                    self._waiters -= 1

    def release_from_thread(self, nbytes: int, loop: asyncio.AbstractEventLoop) -> None:
        """From a decode thread, the moment its decode ends. The event loop is woken only when a caller waits
        for room: otherwise every image would cost one more wake-up of the loop for nothing."""
        with self._lock:
            self._in_use -= nbytes
            waiting = self._waiters > 0
        if waiting:
            with suppress(RuntimeError):  # the loop is closed: nothing is left to admit
                loop.call_soon_threadsafe(self._wake_waiters)

    def release(self, nbytes: int) -> None:
        """On the event loop."""
        with self._lock:
            self._in_use -= nbytes
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        # Wake every waiter: each checks whether it fits now (a small one may while a large one may not).
        self._released.set()
        self._released = asyncio.Event()

    @asynccontextmanager
    async def reserve(self, nbytes: int, deadline: float | None = None) -> AsyncIterator[None]:
        await self.acquire(nbytes, deadline)
        try:
            yield
        finally:
            self.release(nbytes)

    async def run_reserved(self, executor: Executor, nbytes: int, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) in executor; the acquired nbytes are released when the thread is done, not when the
        caller stops waiting: a timed-out request's decode holds its memory until it really ends."""
        loop = asyncio.get_running_loop()
        try:
            job = executor.submit(fn, *args)
        except BaseException:
            self.release(nbytes)
            raise

        def done(_: object) -> None:
            # RuntimeError: the loop is closed, nothing is left to admit.
            with suppress(RuntimeError):
                loop.call_soon_threadsafe(self.release, nbytes)

        job.add_done_callback(done)
        return await asyncio.wrap_future(job)
