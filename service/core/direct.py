"""The direct request path: each image is decoded and run on one worker thread, with no batcher between them.

Used where batches do not pay for the served engine (`service.core.request_path` measures it at load). The
thread that decoded an image runs it through the engine's thread-safe `infer` (for OpenVINO, an infer request of
that thread's own), so a request crosses from the event loop to a thread and back once per image. What the
batcher gave the service stays: a bounded number of images admitted at once (beyond it OverloadedError, a 503),
an accepting flag for readiness, and a drain on stop so a version being replaced answers what it admitted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from service.core.failures import OverloadedError


class DirectPredictor:
    """Admission and per-image inference for the direct path; `run_one` is called on the pipeline's lanes.

    `predict_many` serves arrays the service already holds (/explain's occluded copies, /v2 tensors): they run
    on this predictor's own threads, within the same admission bound."""

    def __init__(
        self,
        infer: Callable[[np.ndarray], np.ndarray],
        *,
        lone: Callable[[np.ndarray], np.ndarray] | None = None,
        max_in_flight: int,
        threads: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._predict = infer
        # A lone image (nothing else admitted) runs here: for OpenVINO the LATENCY compilation, every core on it.
        self._lone = lone or infer
        self._max_in_flight = max_in_flight
        self._threads = threads
        self._on_batch = on_batch
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._accepting = False
        self._executor: ThreadPoolExecutor | None = None

    @property
    def accepting(self) -> bool:
        return self._accepting

    @property
    def queued(self) -> int:
        """Images admitted and not yet answered."""
        return self._in_flight

    def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="infer")
        self._accepting = True

    async def stop(self) -> None:
        """Refuses new work, then waits until every admitted image is answered."""
        self._accepting = False
        await self._idle.wait()
        if self._executor is not None:
            await asyncio.to_thread(self._executor.shutdown, wait=True)
            self._executor = None

    def admit(self, images: int) -> None:
        """On the event loop: all images of a request are admitted together or refused together; each admit is
        followed by one release of the same count when the request ends."""
        if not self._accepting:
            raise OverloadedError("the service is shutting down")
        if self._in_flight + images > self._max_in_flight:
            raise OverloadedError(f"{self._in_flight} images are in flight")
        self._in_flight += images
        self._idle.clear()

    def release(self, images: int) -> None:
        self._in_flight -= images
        if self._in_flight == 0:
            self._idle.set()

    def run_one(self, x: np.ndarray) -> float:
        """On a worker thread: one preprocessed (100, 100, 1) image -> its probability. Only a lone image takes
        the lone call: under load, each image runs on its own thread's share of the engine."""
        run = self._lone if self._in_flight == 1 else self._predict
        (probability,) = run(x[np.newaxis])
        if self._on_batch is not None:
            self._on_batch(1)
        return float(probability)

    async def predict_many(self, images: Sequence[np.ndarray]) -> list[float]:
        self.admit(len(images))
        loop = asyncio.get_running_loop()
        jobs = [loop.run_in_executor(self._executor, self.run_one, x) for x in images]
        try:
            return list(await asyncio.gather(*jobs))
        except BaseException:
            for job in jobs:
                job.cancel()
            raise
        finally:
            self.release(len(images))
