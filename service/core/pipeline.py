"""The request path, free of any web framework: encoded images in, probabilities out.

Each image is admitted by the served version's predictor (`service.core.predictor`), decoded by the shared
preprocessing in a lane chosen by its estimated cost within the memory budget (`service.core.lanes`), and run:
on the thread that decoded it where the predictor does that (the direct path), else through the predictor once
decoded (the micro-batcher, a remote Ray model). Which version serves is rollout's (`service.core.rollout`).
Every door calls it: /predict, /explain and /preprocess, the Open Inference Protocol (`service.edge.routes.v2`),
the `predict` folder CLI and the Ray Serve ingress. Failures are domain errors (`service.core.failures`,
`service.core.preprocessing.ImageError`) that each door turns into its own status codes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from service.core.assembly import model_source
from service.core.config import Settings
from service.core.decode_memory import DecodeBudget, DecodeBusyError, DecodeLimits, decode_limits
from service.core.failures import BusyError, OverloadedError, one_line
from service.core.input_stats import DriftMonitor, ImageSummary, summarize
from service.core.lanes import Lanes, Processed, lane_threads, process
from service.core.memory import available_memory
from service.core.metrics import Metrics
from service.core.model import Classifier
from service.core.predictor import Predictor
from service.core.preprocessing import ImageError
from service.core.quality.live import LiveQuality
from service.core.rollout import Rollout, stop_step
from service.core.served import ServedModel
from service.core.versions import ModelRepository

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodedImage:
    """One image file as a client sent it: its bytes and, when the client gave one, its name."""

    name: str | None
    data: bytes

    @property
    def name_for_errors(self) -> str:
        return f"file '{self.name}'" if self.name else "the request body"


@dataclass(frozen=True)
class Answer:
    probabilities: list[float]
    model: ServedModel
    inputs: Sequence[np.ndarray] = ()  # the preprocessed arrays, for the shadow version
    sha256s: Sequence[str | None] = ()  # the files' hashes, made on the decode threads, for the log


class ServedInputs:
    """What the drift metrics see: served inputs and their answers, against the serving version's own card."""

    def __init__(self, model: ServedModel, settings: Settings, metrics: Metrics) -> None:
        self.settings, self.metrics = settings, metrics
        self.follow(model)

    def follow(self, model: ServedModel) -> None:
        """A version swapped in: drift is measured against its card from now on."""
        card = model.classifier.metadata
        self.monitor = DriftMonitor(
            card.input_statistics, self.settings.drift_window_images, self.settings.near_threshold_margin
        )
        self.metrics.watch_drift(self.monitor)

    def record(self, summaries: Sequence[ImageSummary], probabilities: Sequence[float], threshold: float) -> None:
        """Inputs summarised on the decode threads (measured: 32 us of numpy per image on the event loop, now 2 us
        of appends)."""
        self.monitor.record(summaries, probabilities, threshold)
        self.metrics.observe_inputs(summaries)

    def observe(self, arrays: Sequence[np.ndarray], probabilities: Sequence[float], threshold: float) -> None:
        """Arrays that did not come through the lanes (/v2 tensors), summarised here."""
        if arrays:
            self.record([summarize(array) for array in arrays], probabilities, threshold)


class Pipeline:
    """The request path over the served version: admission, decode lanes, predict, drift; built by `load`."""

    def __init__(
        self, settings: Settings, metrics: Metrics, model: ServedModel, decoder: ThreadPoolExecutor,
        limits: DecodeLimits, repository: ModelRepository | None = None, quality: LiveQuality | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.decoder = decoder
        # Decodes are admitted within a memory budget that follows the container's limit (RELIABILITY.md).
        self.limits = limits
        self.budget = DecodeBudget(limits.decode_memory_budget_bytes, settings.decode_memory_wait_s)
        # Images whose decode is estimated large wait here, never in front of the small ones (service.core.lanes).
        self.large_lane = ThreadPoolExecutor(max_workers=settings.large_lane_threads, thread_name_prefix="decode-large")
        self.lanes = Lanes(decoder, self.large_lane, self.budget, limits.max_pixels, settings.large_image_bytes)
        self.inputs = ServedInputs(model, settings, metrics)
        # The prediction log, verdicts and shadow scoring (service.core.quality); off unless handed in.
        self.quality = quality or LiveQuality(settings.model_copy(update={"prediction_log": False}), metrics, None)
        self.rollout = Rollout(settings, metrics, model, self.quality, repository, on_serve=self.inputs.follow)

    @classmethod
    def load(
        cls, settings: Settings, metrics: Metrics, *, memory_share: float = 1.0, decode_threads: int | None = None,
        model: ServedModel | None = None,
    ) -> Pipeline:
        """The one builder of every door's pipeline (the server, the Ray ingress, both CLIs): loads and checks
        MODEL_DIR's newest version or MODEL_PATH unless `model` is given (a remote one), and raises
        ModelLoadError with a message for the log. `memory_share`: the share of the container's memory that
        the decode budget follows (a Ray actor's share of its node); `decode_threads`: the common lane's threads
        where DECODE_THREADS is auto (default the CPUs)."""
        repository = ModelRepository(settings.model_dir) if settings.model_dir and model is None else None
        if model is None:
            model = ServedModel.load(model_source(settings, repository), settings, metrics)
        threads = settings.decode_threads or decode_threads or lane_threads(settings)
        # Bounded, so many concurrent large uploads cannot each hold a full decoded image at once.
        decoder = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decode")
        memory = available_memory()
        memory = None if memory is None else int(memory * memory_share)
        limits = decode_limits(settings.decode_memory_budget_bytes, settings.max_pixels, memory)
        return cls(settings, metrics, model, decoder, limits, repository, LiveQuality.open(settings, metrics))

    @property
    def model(self) -> ServedModel:
        """The version that answers requests admitted now."""
        return self.rollout.served

    @property
    def classifier(self) -> Classifier:
        return self.model.classifier

    @property
    def predictor(self) -> Predictor:
        return self.model.predictor

    @property
    def ready(self) -> bool:
        """Loaded, warmed and taking work: the one readiness flag (/readyz, the gauge, every door)."""
        return self.model.predictor.admission.accepting

    def threshold(self, requested: float | None = None) -> float:
        """The decision threshold: the request's, else the deployment's THRESHOLD, else the model card's."""
        if requested is not None:
            return requested
        if self.settings.threshold is not None:
            return self.settings.threshold
        return self.model.classifier.metadata.threshold

    def warm_up(self) -> float:
        """The warm-up's seconds: done at load for a model loaded here, run now for one that was not."""
        if self.model.warm_s is not None:
            return self.model.warm_s
        return self.model.warm_up(self.settings.max_batch_size)

    async def start(self) -> None:
        self.rollout.start()
        self.metrics.ready.set_function(lambda: float(self.ready))
        self.quality.start()

    async def stop(self) -> None:
        """Every step runs whatever happened before it (a poller that died, a drain that failed): each failure
        is one ERROR line, and the next step still runs, so admitted requests are answered and threads end."""
        await self.rollout.stop()
        # After the last answer: every row it queued is written before the process ends.
        await stop_step("the prediction log", asyncio.to_thread(self.quality.stop))
        for pool in (self.decoder, self.large_lane):
            try:
                pool.shutdown(wait=True)
            except Exception as exc:  # shutdown goes on; logged with its traceback
                log.error("stopping the decode pool failed: %s", one_line(exc), exc_info=exc)

    def deadline(self) -> float:
        """The event-loop time by which a request that starts now must be answered."""
        return asyncio.get_running_loop().time() + self.settings.request_timeout_s

    async def answer(self, images: Sequence[EncodedImage], deadline: float) -> Answer:
        """Encoded images -> positive-class probabilities in the same order, with the version that answered (all
        images of a call go to one version). One of the two entry points, with answer_arrays."""
        model = self.model
        predictor = model.predictor
        with self._admitted(predictor, len(images)):
            step = predictor.on_decode_thread
            processed = await self._process(images, deadline, step)
            arrays = [p.array for p in processed]
            if step is not None:
                probabilities: list[float] = [p.result for p in processed]  # type: ignore[misc]
            else:
                probabilities = await self._predict(predictor, arrays, deadline)
        self.inputs.record([p.summary for p in processed], probabilities, self.threshold())
        return Answer(probabilities, model, arrays, [p.sha256 for p in processed])

    async def answer_arrays(
        self, arrays: Sequence[np.ndarray], deadline: float, *, served_inputs: bool = True
    ) -> Answer:
        """Preprocessed (100, 100, 1) arrays (/v2 tensors, /explain's copies) -> probabilities, through the version's
        predictor. `served_inputs=False` for arrays the service made itself (occluded copies), which must not
        count in the drift metrics."""
        model = self.model
        with self._admitted(model.predictor, len(arrays)):
            probabilities = await self._predict(model.predictor, arrays, deadline)
        if served_inputs:
            self.inputs.observe(arrays, probabilities, self.threshold())
        return Answer(probabilities, model, arrays)

    def _admitted(self, predictor: Predictor, images: int) -> _Admitted:
        return _Admitted(self, predictor, images)

    async def _predict(self, predictor: Predictor, arrays: Sequence[np.ndarray], deadline: float) -> list[float]:
        try:
            async with asyncio.timeout_at(deadline):
                return await predictor.predict(arrays)
        except OverloadedError as exc:
            raise self._overloaded(exc) from exc
        except TimeoutError as exc:
            raise self.busy("inference did not finish in time") from exc
        except BusyError as exc:  # the predictor's own (a lost Ray replica): its type, the pipeline's wording
            raise self.busy(str(exc), type(exc)) from exc

    async def decode(self, images: Sequence[EncodedImage], deadline: float) -> list[np.ndarray]:
        """Runs the shared preprocessing off the event loop, each decode within the memory budget in the lane its
        cost calls for; the first bad image fails the whole call."""
        return [p.array for p in await self._process(images, deadline, None)]

    async def _process(
        self, images: Sequence[EncodedImage], deadline: float, then: Callable[[np.ndarray], float] | None
    ) -> list[Processed[float]]:
        """Every image through its lane (and `then` on the thread that decoded it), within the deadline; the
        file's sha256 is made there too when the log or the shadow keeps it."""
        digest = self.quality.hashes_images
        try:
            async with asyncio.timeout_at(deadline):
                if len(images) == 1:  # most requests: no task per image, no gather
                    try:
                        return [await process(self.lanes, images[0].data, deadline, then, digest=digest)]
                    except (ImageError, DecodeBusyError) as exc:
                        raise self._failure(images[0], exc) from exc
                results = await asyncio.gather(
                    *(process(self.lanes, image.data, deadline, then, digest=digest) for image in images),
                    return_exceptions=True,
                )
        except TimeoutError as exc:
            raise self.busy("the request did not finish in time" if then else "decoding took too long") from exc
        for image, result in zip(images, results, strict=True):
            if isinstance(result, (ImageError, DecodeBusyError)):
                raise self._failure(image, result) from result
            if isinstance(result, BaseException):
                raise result
        return results  # type: ignore[return-value]

    def _failure(self, image: EncodedImage, exc: ImageError | DecodeBusyError) -> Exception:
        """A bad image keeps its type (each door maps it as before) and says which file; a full budget is busy."""
        if isinstance(exc, DecodeBusyError):
            self.metrics.rejected.labels("decode_memory_busy").inc()
            return self.busy(str(exc))
        self.metrics.rejected.labels(type(exc).__name__).inc()
        return type(exc)(f"{image.name_for_errors}: {exc}")

    def _overloaded(self, exc: OverloadedError) -> BusyError:
        """A request the predictor would not admit (queue or images in flight full, or stopping): counted, 503."""
        self.metrics.rejected.labels("overloaded").inc()
        return self.busy(f"overloaded ({exc})")

    async def log_answer(self, images: Sequence[bytes], answer: Answer, threshold: float) -> list[str]:
        """An id per prediction of a served answer (the order of `images`, the encoded files or tensors): its row
        queued for the prediction log and, in shadow rollout, its input offered to the shadow version."""
        return await self.quality.record(
            answer.model.answerer, images, answer.probabilities, threshold, answer.inputs, answer.sha256s
        )

    def busy(self, why: str, kind: type[BusyError] = BusyError) -> BusyError:
        """The one wording of a retryable refusal, with RETRY_AFTER_S in it (the edge adds the header)."""
        return kind(f"the service is busy: {why}; retry after {self.settings.retry_after_s} s")


class _Admitted:
    """A request's images admitted by the predictor for as long as the request runs; a refusal is the one
    overloaded answer (counted, 503), and the queue-depth gauge is set as the request ends."""

    def __init__(self, pipeline: Pipeline, predictor: Predictor, images: int) -> None:
        self._pipeline, self._predictor, self._images = pipeline, predictor, images

    def __enter__(self) -> None:
        try:
            self._predictor.admission.admit(self._images)
        except OverloadedError as exc:
            raise self._pipeline._overloaded(exc) from exc

    def __exit__(self, *_: object) -> None:
        self._predictor.admission.release(self._images)
        self._pipeline.metrics.queue_depth.set(self._predictor.queued)
