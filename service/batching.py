"""Gathers concurrent single-image requests into micro-batches for one inference thread."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from service.failures import BusyError

log = logging.getLogger(__name__)


class OverloadedError(BusyError):
    """The queue is full, or the batcher is stopping; the caller may retry later."""


@dataclass
class _Item:
    x: np.ndarray
    future: asyncio.Future[float]


class MicroBatcher:
    """One worker task takes what is queued (up to max_batch_size), runs it off the event loop
    and hands each caller exactly its own result. While a batch runs, the next one queues, so
    batches grow with load without adding latency when idle."""

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
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue(maxsize=max_queue)
        self._on_batch = on_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._worker: asyncio.Task[None] | None = None
        self._accepting = False

    @property
    def accepting(self) -> bool:
        """True between start() and stop(): the one readiness flag of the service."""
        return self._accepting

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._worker = asyncio.create_task(self._run(), name="micro-batcher")
        self._accepting = True

    async def stop(self) -> None:
        """Finishes everything already queued, then stops the worker."""
        if self._worker is None:
            return
        self._accepting = False
        # The stop marker queues behind every admitted image, so all of them are answered.
        await self._queue.put(None)
        await self._worker
        self._worker = None
        self._executor.shutdown(wait=True)

    async def predict_many(self, images: Sequence[np.ndarray]) -> list[float]:
        """All images of a request are admitted together or refused together."""
        if not self._accepting:
            raise OverloadedError("the service is shutting down")
        free = self._queue.maxsize - self._queue.qsize()
        if len(images) > free:
            raise OverloadedError(f"{self._queue.qsize()} images are queued")
        loop = asyncio.get_running_loop()
        items = [_Item(x, loop.create_future()) for x in images]
        for item in items:
            self._queue.put_nowait(item)
        try:
            return list(await asyncio.gather(*(item.future for item in items)))
        except asyncio.CancelledError:
            # A timed-out or disconnected caller: the worker skips what is not yet running.
            for item in items:
                item.future.cancel()
            raise

    def _take_queued(self, batch: list[_Item]) -> bool:
        """Moves queued items into batch; False once the stop marker is seen."""
        while len(batch) < self._max_batch_size and not self._queue.empty():
            item = self._queue.get_nowait()
            if item is None:
                return False
            batch.append(item)
        return True

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        running = True
        while running:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            running = self._take_queued(batch)
            if running and self._max_wait_s > 0 and len(batch) < self._max_batch_size:
                await asyncio.sleep(self._max_wait_s)
                running = self._take_queued(batch)
            await self._run_batch(loop, batch)

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
