"""The direct request path: each image is decoded and run on one worker thread, with no batcher between them.

Used where batches do not pay for the served engine (`service.core.request_path` measures it at load). The
thread that decoded an image runs it through the engine's thread-safe `infer` (for OpenVINO, an infer request of
that thread's own), so a request crosses from the event loop to a thread and back once per image. Admission
(`service.core.predictor`) bounds the images in flight (beyond it OverloadedError, a 503), gives readiness its
flag, and lets stop drain, so a version being replaced answers what it admitted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from service.core.predictor import Admission


class DirectPredictor:
    """Per-image inference for the direct path: `on_decode_thread` runs on the pipeline's lanes; `predict` serves
    arrays the service already holds (/explain's occluded copies, /v2 tensors) on this predictor's own threads.
    Both within the same admission bound (`service.core.predictor.Admission`)."""

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
        self._threads = threads
        self._on_batch = on_batch
        self.admission = Admission(max_in_flight)
        self._executor: ThreadPoolExecutor | None = None

    @property
    def queued(self) -> int:
        """Images admitted and not yet answered."""
        return self.admission.in_flight

    @property
    def on_decode_thread(self) -> Callable[[np.ndarray], float]:
        return self.run_one

    def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="infer")
        self.admission.open()

    async def stop(self) -> None:
        """Refuses new work, then waits until every admitted image is answered."""
        self.admission.close()
        await self.admission.drained()
        if self._executor is not None:
            await asyncio.to_thread(self._executor.shutdown, wait=True)
            self._executor = None

    def run_one(self, x: np.ndarray) -> float:
        """On a worker thread: one preprocessed (100, 100, 1) image -> its probability. Only a lone image takes
        the lone call: under load, each image runs on its own thread's share of the engine."""
        run = self._lone if self.admission.in_flight == 1 else self._predict
        (probability,) = run(x[np.newaxis])
        if self._on_batch is not None:
            self._on_batch(1)
        return float(probability)

    async def predict(self, images: Sequence[np.ndarray]) -> list[float]:
        loop = asyncio.get_running_loop()
        jobs = [loop.run_in_executor(self._executor, self.run_one, x) for x in images]
        try:
            return list(await asyncio.gather(*jobs))
        except BaseException:
            for job in jobs:
                job.cancel()
            raise
