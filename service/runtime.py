"""Everything a request needs once the model is up: decode pool, batcher, classifier, metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from fastapi import HTTPException, Request

from service.batching import MicroBatcher, OverloadedError
from service.config import Settings
from service.cpu import available_cpus
from service.decode_memory import DecodeBudget, DecodeLimits, decode_limits, decode_within_budget
from service.errors import http_error_for_image
from service.memory import available_memory
from service.metrics import Metrics
from service.model import Classifier, SessionSettings
from service.preprocessing import ImageError
from service.uploads import Upload, read_uploads

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    classifier: Classifier
    metrics: Metrics
    batcher: MicroBatcher
    decoder: ThreadPoolExecutor
    limits: DecodeLimits
    budget: DecodeBudget
    ready: bool = field(default=False)

    @classmethod
    def load(cls, settings: Settings, metrics: Metrics) -> Runtime:
        """Loads, checks and warms the model; raises ModelLoadError with a message for the log."""
        classifier = Classifier.load(
            settings.model_path,
            settings.metadata_path,
            SessionSettings(
                settings.ort_intra_op_threads,
                settings.ort_inter_op_threads,
                settings.ort_cpu_mem_arena,
                settings.ort_allow_spinning,
            ),
        )
        batcher = MicroBatcher(
            classifier.predict,
            max_batch_size=settings.max_batch_size,
            max_wait_s=settings.max_batch_wait_ms / 1000,
            max_queue=settings.max_queue_images,
            on_batch=metrics.observe_batch,
        )
        # Bounded, so many concurrent large uploads cannot each hold a full decoded image at once.
        decoder = ThreadPoolExecutor(
            max_workers=settings.decode_threads or available_cpus(), thread_name_prefix="decode"
        )
        # Issue 12: decodes are admitted within a memory budget that follows the container's limit.
        limits = decode_limits(settings.decode_memory_budget_bytes, settings.max_pixels, available_memory())
        budget = DecodeBudget(limits.decode_memory_budget_bytes, settings.decode_memory_wait_s)
        return cls(settings, classifier, metrics, batcher, decoder, limits, budget)

    def warm_up(self) -> float:
        return self.classifier.warm_up(tuple(sorted({1, self.settings.max_batch_size})))

    async def start(self) -> None:
        self.batcher.start()
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        await self.batcher.stop()
        self.decoder.shutdown(wait=True)

    def deadline(self) -> float:
        return asyncio.get_running_loop().time() + self.settings.request_timeout_s

    async def receive(self, request: Request, deadline: float) -> list[Upload]:
        try:
            async with asyncio.timeout_at(deadline):
                return await read_uploads(request, self.settings.max_files, self.settings.max_file_bytes)
        except TimeoutError as exc:
            raise HTTPException(
                408, f"the upload did not arrive within {self.settings.request_timeout_s:g} s"
            ) from exc

    async def decode(self, uploads: Sequence[Upload], deadline: float) -> list[np.ndarray]:
        jobs = [
            decode_within_budget(self.budget, self.decoder, upload.data, self.limits.max_pixels, deadline)
            for upload in uploads
        ]
        try:
            async with asyncio.timeout_at(deadline):
                results = await asyncio.gather(*jobs, return_exceptions=True)
        except TimeoutError as exc:
            raise self._busy("decoding took too long") from exc
        for upload, result in zip(uploads, results, strict=True):
            if isinstance(result, ImageError):
                self.metrics.rejected.labels(type(result).__name__).inc()
                raise http_error_for_image(result, upload.name_for_errors)
            if isinstance(result, OverloadedError):  # issue 12: DecodeBusyError
                self.metrics.rejected.labels("decode_memory_busy").inc()
                raise self._busy(str(result))
            if isinstance(result, BaseException):
                raise result
        return list(results)  # type: ignore[arg-type]

    async def predict(self, images: Sequence[np.ndarray], deadline: float) -> list[float]:
        try:
            async with asyncio.timeout_at(deadline):
                return await self.batcher.predict_many(images)
        except OverloadedError as exc:
            self.metrics.rejected.labels("overloaded").inc()
            raise self._busy(f"overloaded ({exc})") from exc
        except TimeoutError as exc:
            raise self._busy("inference did not finish in time") from exc
        finally:
            self.metrics.queue_depth.set(self.batcher.queued)

    def _busy(self, why: str) -> HTTPException:
        return HTTPException(
            503,
            f"the service is busy: {why}; retry after {self.settings.retry_after_s} s",
            headers={"Retry-After": str(self.settings.retry_after_s)},
        )
