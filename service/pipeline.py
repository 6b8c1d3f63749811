"""The request pipeline, free of any web framework: encoded images in, probabilities out.

decode (a bounded thread pool running the shared preprocessing) -> predict (the micro-batcher in front of
the model). Every door into the service (the HTTP routes today, other protocols and tools later) calls
`classify`; failures are domain errors (`service.failures`, `service.preprocessing.ImageError`) that
each door turns into its own status codes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from service.batching import MicroBatcher, OverloadedError
from service.config import Settings
from service.cpu import available_cpus
from service.failures import BusyError, NotReadyError
from service.metrics import Metrics
from service.model import Classifier
from service.preprocessing import ImageError, preprocess_bytes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodedImage:
    """One image file as a client sent it: its bytes and, when the client gave one, its name."""

    name: str | None
    data: bytes

    @property
    def name_for_errors(self) -> str:
        return f"file '{self.name}'" if self.name else "the request body"


class Pipeline:
    """The loaded model with its decode pool and batcher; built once per process by `load`."""

    def __init__(
        self, settings: Settings, classifier: Classifier, metrics: Metrics, batcher: MicroBatcher,
        decoder: ThreadPoolExecutor,
    ) -> None:
        self.settings = settings
        self.classifier = classifier
        self.metrics = metrics
        self.batcher = batcher
        self.decoder = decoder

    @classmethod
    def load(cls, settings: Settings, metrics: Metrics) -> Pipeline:
        """Loads and checks the model; raises ModelLoadError with a message for the log."""
        classifier = Classifier.load(
            settings.model_path, settings.session, engine=settings.engine, precision=settings.precision
        )
        served = classifier.engine.describe()
        metrics.model_info.labels(served["engine"], served["precision"]).set(1)
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
        return cls(settings, classifier, metrics, batcher, decoder)

    @property
    def ready(self) -> bool:
        """Loaded, warmed and taking work: the one readiness flag (/readyz, the gauge, every door)."""
        return self.batcher.accepting

    def warm_up(self) -> float:
        return self.classifier.warm_up(tuple(sorted({1, self.settings.max_batch_size})))

    async def start(self) -> None:
        self.batcher.start()
        self.metrics.ready.set_function(lambda: float(self.ready))

    async def stop(self) -> None:
        await self.batcher.stop()
        self.decoder.shutdown(wait=True)

    def deadline(self) -> float:
        """The event-loop time by which a request that starts now must be answered."""
        return asyncio.get_running_loop().time() + self.settings.request_timeout_s

    def check_ready(self) -> None:
        if not self.ready:
            raise NotReadyError("the model is not loaded yet")

    async def classify(self, images: Sequence[EncodedImage], deadline: float) -> list[float]:
        """Encoded images -> positive-class probabilities, in the same order."""
        arrays = await self.decode(images, deadline)
        return await self.predict(arrays, deadline)

    async def decode(self, images: Sequence[EncodedImage], deadline: float) -> list[np.ndarray]:
        """Runs the shared preprocessing off the event loop; the first bad image fails the whole call."""
        loop = asyncio.get_running_loop()
        jobs = [
            loop.run_in_executor(self.decoder, preprocess_bytes, image.data, self.settings.max_pixels)
            for image in images
        ]
        try:
            async with asyncio.timeout_at(deadline):
                results = await asyncio.gather(*jobs, return_exceptions=True)
        except TimeoutError as exc:
            raise self._busy("decoding took too long") from exc
        for image, result in zip(images, results, strict=True):
            if isinstance(result, ImageError):
                self.metrics.rejected.labels(type(result).__name__).inc()
                # Same type, so each door maps it as before; the message says which file.
                raise type(result)(f"{image.name_for_errors}: {result}") from result
            if isinstance(result, BaseException):
                raise result
        return list(results)  # type: ignore[arg-type]

    async def predict(self, arrays: Sequence[np.ndarray], deadline: float) -> list[float]:
        """Preprocessed (100, 100, 1) arrays -> probabilities, through the micro-batcher."""
        try:
            async with asyncio.timeout_at(deadline):
                return await self.batcher.predict_many(arrays)
        except OverloadedError as exc:
            self.metrics.rejected.labels("overloaded").inc()
            raise self._busy(f"overloaded ({exc})") from exc
        except TimeoutError as exc:
            raise self._busy("inference did not finish in time") from exc
        finally:
            self.metrics.queue_depth.set(self.batcher.queued)

    def _busy(self, why: str) -> BusyError:
        return BusyError(f"the service is busy: {why}; retry after {self.settings.retry_after_s} s")
