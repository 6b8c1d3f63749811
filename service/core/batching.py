"""Gathers concurrent single-image requests into micro-batches for one inference thread."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from service.core.failures import OverloadedError
from service.core.predictor import Admission

log = logging.getLogger(__name__)


@dataclass
class _Item:
    x: np.ndarray
    future: asyncio.Future[float]


class MicroBatcher:
    """One worker task takes what is queued (up to max_batch_size), runs it off the event loop
    and hands each caller exactly its own result. While a batch runs, the next one queues, so
    batches grow with load without adding latency when idle.

    A lone request (nothing queued, nothing running, no MAX_BATCH_WAIT_S) skips the queue and the
    worker: the caller hands its batch to the inference thread itself. What it saves was measured with
    py-spy and an in-process loop (BENCHMARKS.md): the queue put/get, the worker task's wake-up and the
    gather over per-image futures, on every request at one connection. Requests arriving meanwhile queue
    as before and run, batched, as soon as it finishes: the model still runs one batch at a time."""

    def __init__(
        self,
        predict: Callable[[np.ndarray], np.ndarray],
        *,
        max_batch_size: int,
        max_wait_s: float,
        max_queue: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._predict = predict
        self._max_batch_size = max_batch_size
        self._max_wait_s = max_wait_s
        self._max_queue = max_queue
        self._queue: deque[_Item] = deque()
        # Set whenever the worker may have something to do: an item queued, a lone run ended, stop.
        self._wake = asyncio.Event()
        self._on_batch = on_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._worker: asyncio.Task[None] | None = None
        # Bounded by the queue below, not here: images admitted while they decode are not queued yet.
        self.admission = Admission()
        self._stopping = False
        # Touched on the event loop only: whether a batch or a lone request is on the inference thread.
        self._batch_running = False
        self._lone_running = False

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def on_decode_thread(self) -> None:
        """Nothing runs on the decoding thread: decoded images are batched here."""
        return None

    def start(self) -> None:
        self._stopping = False
        self._worker = asyncio.create_task(self._run(), name="micro-batcher")
        self.admission.open()

    async def stop(self) -> None:
        """Refuses new work, answers every admitted image (queued, running, or still decoding), then stops the
        worker."""
        self.admission.close()
        if self._worker is None:
            return
        await self.admission.drained()
        self._stopping = True
        self._wake.set()
        await self._worker
        self._worker = None
        self._executor.shutdown(wait=True)

    async def predict(self, images: Sequence[np.ndarray]) -> list[float]:
        """Admitted images; refused with OverloadedError when they do not fit the queue."""
        if self._idle() and len(images) <= self._max_batch_size:
            return await self._run_lone(images)
        free = self._max_queue - len(self._queue)
        if len(images) > free:
            raise OverloadedError(f"{len(self._queue)} images are queued")
        loop = asyncio.get_running_loop()
        items = [_Item(x, loop.create_future()) for x in images]
        self._queue.extend(items)
        self._wake.set()
        try:
            return list(await asyncio.gather(*(item.future for item in items)))
        except asyncio.CancelledError:
            # A timed-out or disconnected caller: the worker skips what is not yet running.
            for item in items:
                item.future.cancel()
            raise

    def _idle(self) -> bool:
        # With a batch wait configured the operator chose batch size over latency: no shortcut then.
        return self._max_wait_s == 0 and not self._queue and not self._batch_running and not self._lone_running

    async def _run_lone(self, images: Sequence[np.ndarray]) -> list[float]:
        loop = asyncio.get_running_loop()
        x = np.stack(images)
        self._lone_running = True
        job: Future[np.ndarray] = self._executor.submit(self._predict, x)
        # Done (or cancelled before it started) on whichever thread: the worker may go on from then, not
        # from when a cancelled caller stops waiting, so the model never runs two calls at once.
        job.add_done_callback(lambda _: loop.call_soon_threadsafe(self._lone_finished, job, len(images)))
        probabilities = await asyncio.wrap_future(job)
        if len(probabilities) != len(images):
            raise RuntimeError(f"the model returned {len(probabilities)} results for {len(images)} images")
        return [float(p) for p in probabilities]

    def _lone_finished(self, job: Future[np.ndarray], size: int) -> None:
        self._lone_running = False
        self._wake.set()
        # Counted like a batch once it ran, whether or not its caller is still waiting.
        ran = not job.cancelled() and job.exception() is None and len(job.result()) == size
        if ran and self._on_batch is not None:
            self._on_batch(size)

    def _take_queued(self, batch: list[_Item]) -> None:
        while len(batch) < self._max_batch_size and self._queue:
            batch.append(self._queue.popleft())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # Items stay queued (and counted) while a lone request holds the model.
            while not self._queue or self._lone_running:
                if self._stopping and not self._queue and not self._lone_running:
                    return
                self._wake.clear()
                await self._wake.wait()
            self._batch_running = True
            try:
                batch: list[_Item] = []
                self._take_queued(batch)
                if self._max_wait_s > 0 and len(batch) < self._max_batch_size:
                    await asyncio.sleep(self._max_wait_s)
                    self._take_queued(batch)
                await self._run_batch(loop, batch)
            finally:
                self._batch_running = False

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Item]) -> None:
        live = [item for item in batch if not item.future.done()]
        if not live:
            return
        try:
            x = np.stack([item.x for item in live])
            probabilities = await loop.run_in_executor(self._executor, self._predict, x)
            if len(probabilities) != len(live):
                raise RuntimeError(f"the model returned {len(probabilities)} results for {len(live)} images")
        except Exception as exc:  # noqa: BLE001 - handed to every waiting caller, logged there
            for item in live:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        if self._on_batch is not None:
            self._on_batch(len(live))
        for item, probability in zip(live, probabilities, strict=True):
            if not item.future.done():
                item.future.set_result(float(probability))
