"""The request pipeline, free of any web framework: encoded images in, probabilities out.

Each image is decoded by the shared preprocessing in a lane chosen by its estimated cost, within the memory
budget (`service.core.lanes`), then run by the served version: on the same thread when batches do not pay for
its engine (the direct path, `service.core.direct`), else through its micro-batcher (`service.core.request_path`
chooses at load). Every door calls it: /predict,
/explain and /preprocess, the Open Inference Protocol (`service.edge.routes.v2`), the `predict` folder CLI and the Ray
Serve ingress. Failures are domain errors (`service.core.failures`, `service.core.preprocessing.ImageError`) that each
door turns into its own status codes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from service.core import request_path
from service.core.assembly import load_classifier, model_source, version_name
from service.core.batching import MicroBatcher
from service.core.config import Settings
from service.core.cpu import available_cpus
from service.core.decode_memory import DecodeBudget, DecodeBusyError, DecodeLimits, decode_limits
from service.core.direct import DirectPredictor
from service.core.failures import BusyError, OverloadedError, ReloadRefusedError, one_line
from service.core.input_stats import DriftMonitor, ImageSummary, summarize  # issue 34
from service.core.lanes import Lanes, Processed, process
from service.core.memory import available_memory
from service.core.metrics import Metrics
from service.core.model import Classifier, ModelLoadError, serving_batch_sizes
from service.core.preprocessing import ImageError
from service.core.quality.live import LiveQuality
from service.core.quality.records import Answerer
from service.core.quality.shadow import ShadowModel
from service.core.reloads import PollMemory
from service.core.request_path import PathChoice
from service.core.versions import ModelRepository, ModelSource

log = logging.getLogger(__name__)


def lane_threads(settings: Settings) -> int:
    """The common decode lane's threads (DECODE_THREADS, auto = the CPUs), which on the direct path also run the
    model: the pool, the direct predictor and the shadow's idea of spare capacity all follow it."""
    return settings.decode_threads or available_cpus()


@dataclass(frozen=True)
class ReloadOutcome:
    previous: str
    serving: str
    swapped: bool
    shadow: str | None = None  # ROLLOUT=shadow: the version scored in shadow, not served


@dataclass(frozen=True)
class EncodedImage:
    """One image file as a client sent it: its bytes and, when the client gave one, its name."""

    name: str | None
    data: bytes

    @property
    def name_for_errors(self) -> str:
        return f"file '{self.name}'" if self.name else "the request body"


class Predictor(Protocol):
    """What the predict step runs through: the in-process MicroBatcher, or a remote model
    (`service.entrypoints.ray_app.RemoteModel`, a Ray Serve deployment behind the same limits and errors)."""

    @property
    def accepting(self) -> bool: ...

    @property
    def queued(self) -> int: ...

    def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def predict_many(self, images: Sequence[np.ndarray]) -> list[float]: ...


@dataclass(frozen=True)
class ServedModel:
    """One loaded version with its own predictor (direct or batcher), so a request admitted to it is answered by
    it even while a newer version takes over (the old predictor drains what it admitted, then stops)."""

    classifier: Classifier
    version: str
    batcher: Predictor
    path: PathChoice | None = None
    # Seconds the warm-up at load took (None: not warmed yet, as a remote model is).
    warm_s: float | None = None

    @classmethod
    def load(cls, source: ModelSource, settings: Settings, metrics: Metrics) -> ServedModel:
        """Loads, checks and warms the version, then measures which request path it gets."""
        classifier = load_classifier(source, settings)
        version = version_name(source, classifier)
        warm_s = classifier.warm_up(serving_batch_sizes(settings.max_batch_size))  # fails when run: ModelLoadError
        threads = lane_threads(settings)
        choice = request_path.choose(settings, classifier.infer, classifier.predict, threads)
        predictor: Predictor
        if choice.path == "direct":
            predictor = DirectPredictor(
                classifier.infer, lone=classifier.predict, max_in_flight=settings.max_queue_images,
                threads=threads, on_batch=metrics.observe_batch,
            )
        else:
            predictor = MicroBatcher(
                classifier.predict,
                max_batch_size=settings.max_batch_size,
                max_wait_s=settings.max_batch_wait_s,
                max_queue=settings.max_queue_images,
                on_batch=metrics.observe_batch,
            )
        return cls(classifier, version, predictor, choice, warm_s)

    @property
    def direct(self) -> DirectPredictor | None:
        """The direct path's predictor, when this version runs each image on the thread that decoded it."""
        return self.batcher if isinstance(self.batcher, DirectPredictor) else None

    def warm_up(self, max_batch_size: int) -> float:
        return self.classifier.warm_up(serving_batch_sizes(max_batch_size))

    @property
    def answerer(self) -> Answerer:
        """Who answered, as the prediction log records it."""
        engine = self.classifier.engine
        names = self.classifier.metadata.class_names
        return Answerer(self.version, engine.name, engine.precision, (names[0], names[1]))


@dataclass(frozen=True)
class Answer:
    probabilities: list[float]
    model: ServedModel
    inputs: Sequence[np.ndarray] = ()  # the preprocessed arrays, for the shadow version
    sha256s: Sequence[str | None] = ()  # issue 34: the files' hashes, made on the decode threads, for the log


class Pipeline:
    """The served model with its decode pool and batcher; built once per process by `load`."""

    def __init__(
        self, settings: Settings, metrics: Metrics, model: ServedModel, decoder: ThreadPoolExecutor,
        limits: DecodeLimits, repository: ModelRepository | None = None, quality: LiveQuality | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.model = model
        self.decoder = decoder
        # Decodes are admitted within a memory budget that follows the container's limit (RELIABILITY.md).
        self.limits = limits
        self.budget = DecodeBudget(limits.decode_memory_budget_bytes, settings.decode_memory_wait_s)
        # Images whose decode is estimated large wait here, never in front of the small ones (service.core.lanes).
        self.large_lane = ThreadPoolExecutor(max_workers=settings.large_lane_threads, thread_name_prefix="decode-large")
        self.lanes = Lanes(decoder, self.large_lane, self.budget, limits.max_pixels, settings.large_image_bytes)
        self._reload_lock = asyncio.Lock()
        self._draining: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._repository = repository or (ModelRepository(settings.model_dir) if settings.model_dir else None)
        self._polled = PollMemory()
        self.drift = self._drift_monitor(model)
        # The prediction log, verdicts and shadow scoring (service.core.quality); off unless handed in.
        self.quality = quality or LiveQuality(settings.model_copy(update={"prediction_log": False}), metrics, None)
        self.shadow: ServedModel | None = None

    @classmethod
    def load(cls, settings: Settings, metrics: Metrics) -> Pipeline:
        """Loads and checks the model; raises ModelLoadError with a message for the log."""
        repository = ModelRepository(settings.model_dir) if settings.model_dir else None
        model = ServedModel.load(model_source(settings, repository), settings, metrics)
        # Bounded, so many concurrent large uploads cannot each hold a full decoded image at once.
        decoder = ThreadPoolExecutor(max_workers=lane_threads(settings), thread_name_prefix="decode")
        limits = decode_limits(settings.decode_memory_budget_bytes, settings.max_pixels, available_memory())
        return cls(settings, metrics, model, decoder, limits, repository, LiveQuality.open(settings, metrics))

    def _drift_monitor(self, model: ServedModel) -> DriftMonitor:
        monitor = DriftMonitor(
            model.classifier.metadata.input_statistics, self.settings.drift_window_images,
            self.settings.near_threshold_margin,
        )
        self.metrics.watch_drift(monitor)
        return monitor

    @property
    def classifier(self) -> Classifier:
        """The model that answers requests admitted now."""
        return self.model.classifier

    @property
    def batcher(self) -> Predictor:
        return self.model.batcher

    @property
    def ready(self) -> bool:
        """Loaded, warmed and taking work: the one readiness flag (/readyz, the gauge, every door)."""
        return self.model.batcher.accepting

    def request_path(self) -> str:
        """The served version's path and why, in words (the start-up and reload log lines)."""
        path = self.model.path
        return f"{path.path} ({path.reason})" if path is not None else "remote"

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
        self.model.batcher.start()
        self.metrics.ready.set_function(lambda: float(self.ready))
        self._label_served(self.model)
        self.quality.start()
        if self.settings.model_dir is not None and self.settings.model_poll_interval_s > 0:
            self._poller = asyncio.create_task(self._poll(self.settings.model_poll_interval_s), name="model-poller")

    async def stop(self) -> None:
        """Every step runs whatever happened before it (a poller that died, a drain that failed): each failure
        is one ERROR line, and the next step still runs, so admitted requests are answered and threads end."""
        if self._poller is not None:
            self._poller.cancel()
            await self._stop_step("the version poller", self._poller)
        async with self._reload_lock:
            await self._stop_step("the batcher", self.model.batcher.stop())
            for drain in list(self._draining):
                await self._stop_step(drain.get_name(), drain)
        # After the last answer: every row it queued is written before the process ends.
        await self._stop_step("the prediction log", asyncio.to_thread(self.quality.stop))
        for pool in (self.decoder, self.large_lane):
            try:
                pool.shutdown(wait=True)
            except Exception as exc:  # shutdown goes on; logged with its traceback
                log.error("stopping the decode pool failed: %s", one_line(exc), exc_info=exc)

    async def _stop_step(self, what: str, step: Awaitable[object]) -> None:
        try:
            await step
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]  # our own stop was cancelled
                raise
        except Exception as exc:  # shutdown goes on; logged with its traceback
            log.error("stopping %s failed: %s", what, one_line(exc), exc_info=exc)

    async def reload(self, *, polled: bool = False) -> ReloadOutcome:
        """Serves MODEL_DIR's highest version if it is newer than the one served: loaded, checked and warmed
        beside the old one, then swapped in; requests already admitted finish on the old one. A version that
        fails at any step (read, card, sha256, load, warm-up, whatever the engine raises) is refused
        (ReloadRefusedError: one ERROR line, model_reloads_total{outcome="refused"}) and the old one keeps
        serving. `polled`: the poller's call, which skips a version refused before whose files are unchanged."""
        if self.settings.model_dir is None or self._repository is None:
            raise ReloadRefusedError("reload needs MODEL_DIR (versions); this service serves one MODEL_PATH file")
        async with self._reload_lock:
            current = self.model
            try:
                source = self._repository.latest()
            except ModelLoadError as exc:
                raise self._refused(f"{exc}; still serving version {current.version}", polled) from exc
            newest = max(int(current.version), int(self.shadow.version) if self.shadow else 0)
            if int(source.version or 0) <= newest:
                return ReloadOutcome(current.version, current.version, swapped=False, shadow=self._shadow_version)
            if polled and self._polled.refused_before(source):
                return ReloadOutcome(current.version, current.version, swapped=False)
            try:
                candidate = await asyncio.to_thread(self._load_checked, source)
            except Exception as exc:  # any failure of the candidate is a refusal, never a 500
                self._polled.refuse(source)
                why = str(exc) if isinstance(exc, ModelLoadError) else one_line(exc)
                raise self._refused(
                    f"version {source.version} refused: {why}; still serving version {current.version}",
                    polled=False,
                ) from exc
            if self.settings.rollout == "shadow":
                await self._follow_in_shadow(candidate, source)
                return ReloadOutcome(current.version, current.version, swapped=False, shadow=candidate.version)
            self._serve(candidate, current)
            return ReloadOutcome(current.version, candidate.version, swapped=True)

    async def promote(self) -> ReloadOutcome:
        """Serves the version scored in shadow (ROLLOUT=shadow); requests already admitted finish on the old one."""
        async with self._reload_lock:
            current, candidate = self.model, self.shadow
            if candidate is None:
                raise ReloadRefusedError(
                    f"no version is scored in shadow (ROLLOUT={self.settings.rollout}); still serving version "
                    f"{current.version}"
                )
            self.shadow = None
            self.quality.follow_shadow(None)
            self._serve(candidate, current)
            return ReloadOutcome(current.version, candidate.version, swapped=True)

    @property
    def _shadow_version(self) -> str | None:
        return self.shadow.version if self.shadow is not None else None

    async def _follow_in_shadow(self, candidate: ServedModel, source: ModelSource) -> None:
        """The checked candidate waits to be promoted; meanwhile a one-thread session of it (so it can only
        take spare CPU, service.core.quality.shadow) scores a share of live images."""
        one_thread = replace(self.settings.session, intra_op_threads=1, inter_op_threads=1)
        scorer = await asyncio.to_thread(load_classifier, source, self.settings, one_thread, 1)
        threshold = self.settings.threshold
        self.shadow = candidate
        self.quality.follow_shadow(ShadowModel(
            candidate.answerer, scorer.infer,
            threshold if threshold is not None else candidate.classifier.metadata.threshold,
        ), self._spare)
        self.metrics.reloads.labels("shadowed").inc()
        log.info("version %s (%s) is scored in shadow; version %s serves until POST /admin/promote",
                 candidate.version, candidate.classifier.model_id[:12], self.model.version)

    def _spare(self) -> bool:
        """Serving leaves capacity: fewer images in flight than threads to run them."""
        return self.model.batcher.queued < lane_threads(self.settings)

    def _serve(self, candidate: ServedModel, current: ServedModel) -> None:
        """Swaps the checked candidate in; the old version drains what it admitted."""
        candidate.batcher.start()
        self.model = candidate
        self.drift = self._drift_monitor(candidate)
        self._label_served(candidate)
        self.metrics.reloads.labels("swapped").inc()
        drain = asyncio.create_task(current.batcher.stop(), name=f"drain-version-{current.version}")
        self._draining.add(drain)
        drain.add_done_callback(self._draining.discard)
        log.info("now serving version %s (%s), request path %s; version %s drains", candidate.version,
                 candidate.classifier.model_id[:12], self.request_path(), current.version)

    def _refused(self, reason: str, polled: bool) -> ReloadRefusedError:
        """One ERROR line and one count per refusal; the poller's repeats of one reason are silent."""
        if not polled or self._polled.first_report(reason):
            self.metrics.reloads.labels("refused").inc()
            log.error("%s", reason)
        return ReloadRefusedError(reason)

    def _label_served(self, model: ServedModel) -> None:
        """model_version_served and model_info name the version, engine and precision that answer."""
        served = model.classifier.engine.describe()
        self.metrics.served_version.clear()
        self.metrics.served_version.labels(model.version).set(1)
        self.metrics.model_info.clear()
        self.metrics.model_info.labels(served["engine"], served["precision"]).set(1)

    def _load_checked(self, source: ModelSource) -> ServedModel:
        return ServedModel.load(source, self.settings, self.metrics)  # checked and warmed there

    async def _poll(self, interval_s: float) -> None:
        """Reloads every interval_s until cancelled, whatever a tick raises: a refused version is logged by
        reload, any other error once per distinct message (with its traceback) and counted."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.reload(polled=True)
            except ReloadRefusedError:
                pass  # logged and counted by reload; the old version keeps serving
            except Exception as exc:  # the poller must outlive any error
                self.metrics.poll_errors.inc()
                reason = one_line(exc)
                if self._polled.first_report(reason):
                    log.error("the version poller's check failed: %s; it checks again every %g s", reason,
                              interval_s, exc_info=exc)

    def deadline(self) -> float:
        """The event-loop time by which a request that starts now must be answered."""
        return asyncio.get_running_loop().time() + self.settings.request_timeout_s

    async def answer(self, images: Sequence[EncodedImage], deadline: float) -> Answer:
        """Encoded images -> positive-class probabilities in the same order, with the version that answered (all
        images of a call go to one version). One of the two entry points, with answer_arrays."""
        model = self.model
        direct = model.direct
        if direct is None:  # issue 34: summaries and hashes from the decode threads (4 lines)
            decoded = await self._process(images, deadline, None)
            batched = await self.answer_arrays([p.array for p in decoded], deadline, served_inputs=False)
            self._record([p.summary for p in decoded], batched.probabilities)
            return replace(batched, sha256s=[p.sha256 for p in decoded])
        try:
            direct.admit(len(images))
        except OverloadedError as exc:
            raise self._overloaded(exc) from exc
        try:
            processed = await self._process(images, deadline, direct.run_one)
        finally:
            direct.release(len(images))
            self.metrics.queue_depth.set(direct.queued)
        probabilities: list[float] = [p.result for p in processed]  # type: ignore[misc]
        arrays = [p.array for p in processed]
        self._record([p.summary for p in processed], probabilities)  # issue 34
        return Answer(probabilities, model, arrays, [p.sha256 for p in processed])  # issue 34

    async def decode(self, images: Sequence[EncodedImage], deadline: float) -> list[np.ndarray]:
        """Runs the shared preprocessing off the event loop, each decode within the memory budget in the lane its
        cost calls for; the first bad image fails the whole call."""
        return [p.array for p in await self._process(images, deadline, None)]

    async def _process(
        self, images: Sequence[EncodedImage], deadline: float, then: Callable[[np.ndarray], float] | None
    ) -> list[Processed[float]]:
        """Every image through its lane (and `then` on the thread that decoded it), within the deadline."""
        digest = self.quality.hashes_images  # issue 34: the log's sha256 on the decode thread
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

    def _observe(self, arrays: Sequence[np.ndarray], probabilities: Sequence[float]) -> None:
        """Served inputs and answers into the drift metrics: arrays that did not come through the lanes (/v2
        tensors, /explain) are summarised here."""
        if arrays:
            self._record([summarize(array) for array in arrays], probabilities)  # issue 34

    def _record(self, summaries: Sequence[ImageSummary], probabilities: Sequence[float]) -> None:
        """issue 34: inputs summarised on the decode threads: only appends on the event loop."""
        self.drift.record(summaries, probabilities, self.threshold())
        self.metrics.observe_inputs(summaries)

    async def answer_arrays(
        self, arrays: Sequence[np.ndarray], deadline: float, *, served_inputs: bool = True
    ) -> Answer:
        """Preprocessed (100, 100, 1) arrays (/v2 tensors, /explain's copies) -> probabilities, through the version's
        predictor. `served_inputs=False` for arrays the service made itself (occluded copies), which must not
        count in the drift metrics."""
        model = self.model
        try:
            async with asyncio.timeout_at(deadline):
                probabilities = await model.batcher.predict_many(arrays)
        except OverloadedError as exc:
            raise self._overloaded(exc) from exc
        except TimeoutError as exc:
            raise self.busy("inference did not finish in time") from exc
        except BusyError as exc:  # the predictor's own (a lost Ray replica): its type, the pipeline's wording
            raise self.busy(str(exc), type(exc)) from exc
        finally:
            self.metrics.queue_depth.set(model.batcher.queued)
        if served_inputs:
            self._observe(arrays, probabilities)
        return Answer(probabilities, model, arrays)

    async def log_answer(self, images: Sequence[bytes], answer: Answer, threshold: float) -> list[str]:
        """An id per prediction of a served answer (the order of `images`, the encoded files or tensors): its row
        queued for the prediction log and, in shadow rollout, its input offered to the shadow version."""
        return await self.quality.record(
            answer.model.answerer, images, answer.probabilities, threshold, answer.inputs, answer.sha256s  # issue 34
        )

    def busy(self, why: str, kind: type[BusyError] = BusyError) -> BusyError:
        """The one wording of a retryable refusal, with RETRY_AFTER_S in it (the edge adds the header)."""
        return kind(f"the service is busy: {why}; retry after {self.settings.retry_after_s} s")
