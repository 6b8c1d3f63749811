"""Rollout: which version serves, and how a newer one takes over (the model repository beside the data plane).

MODEL_DIR's versions are reloaded on request (POST /admin/reload) or by the poller; a checked, warmed candidate
is swapped in while the old version drains what it admitted, or (ROLLOUT=shadow) scored beside it on live images
until POST /admin/promote. A version that fails at any step is refused and the old one keeps serving. The
request path (`service.core.pipeline`) reads `served` for each request and knows nothing of this.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from service.core.assembly import load_classifier
from service.core.config import Settings
from service.core.failures import ReloadRefusedError, one_line
from service.core.lanes import lane_threads
from service.core.metrics import Metrics
from service.core.model import ModelLoadError
from service.core.quality.gatekeeper import GateKeeper, Roles
from service.core.quality.live import LiveQuality
from service.core.quality.shadow import ShadowModel
from service.core.served import ServedModel
from service.core.versions import Fingerprint, ModelRepository, ModelSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReloadOutcome:
    previous: str
    serving: str
    swapped: bool
    shadow: str | None = None  # ROLLOUT=shadow: the version scored in shadow, not served


@dataclass
class PollMemory:
    """What the poller has already refused or logged. An unchanged refused version is not loaded, warmed,
    logged and counted again at every tick (Triton's poll mode, likewise, acts on changed files only);
    POST /admin/reload always tries again."""

    _refused: dict[str, Fingerprint] = field(default_factory=dict)
    _reported: set[str] = field(default_factory=set)
    max_reasons: int = 256  # so a message that varies at every tick cannot grow the set without bound

    def refused_before(self, source: ModelSource) -> bool:
        return bool(source.fingerprint) and self._refused.get(source.version or "") == source.fingerprint

    def refuse(self, source: ModelSource) -> None:
        self._refused[source.version or ""] = source.fingerprint

    def first_report(self, reason: str) -> bool:
        """True the first time this reason is seen: the one time it is logged."""
        if reason in self._reported:
            return False
        if len(self._reported) >= self.max_reasons:
            self._reported.clear()
        self._reported.add(reason)
        return True


async def stop_step(what: str, step: Awaitable[object]) -> None:
    """Awaits one step of a shutdown: a failure is one ERROR line (with its traceback) and the next step runs."""
    try:
        await step
    except asyncio.CancelledError:
        if asyncio.current_task().cancelling():  # type: ignore[union-attr]  # our own stop was cancelled
            raise
    except Exception as exc:  # shutdown goes on; logged with its traceback
        log.error("stopping %s failed: %s", what, one_line(exc), exc_info=exc)


class Rollout:
    """The served version, the one scored in shadow, and every change between versions."""

    def __init__(
        self, settings: Settings, metrics: Metrics, served: ServedModel, quality: LiveQuality,
        repository: ModelRepository | None = None, on_serve: Callable[[ServedModel], None] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.served = served
        self.shadow: ServedModel | None = None
        self.quality = quality
        self._repository = repository or (ModelRepository(settings.model_dir) if settings.model_dir else None)
        self._on_serve = on_serve  # the pipeline's per-version state (drift statistics)
        self._lock = asyncio.Lock()
        self._draining: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._polled = PollMemory()
        # Promotion and rollback by evidence (service.core.quality.gatekeeper): it calls promote.
        self.gate = GateKeeper(settings, quality.store, metrics, swap=self.promote, roles=lambda: Roles(
            self.served.version, self._shadow_version, self.served.classifier.metadata.class_names[1]))

    def start(self) -> None:
        self.served.predictor.start()
        self._label_served(self.served)
        self.gate.start()
        if self.settings.model_dir is not None and self.settings.model_poll_interval_s > 0:
            self._poller = asyncio.create_task(self._poll(self.settings.model_poll_interval_s), name="model-poller")

    async def stop(self) -> None:
        """The poller first, then the served version and every draining one answer what they admitted."""
        if self._poller is not None:
            self._poller.cancel()
            await stop_step("the version poller", self._poller)
        await stop_step("the promotion gate", self.gate.stop())
        async with self._lock:
            await stop_step("the predictor", self.served.predictor.stop())
            for drain in list(self._draining):
                await stop_step(drain.get_name(), drain)

    async def reload(self, *, polled: bool = False) -> ReloadOutcome:
        """Serves MODEL_DIR's highest version if it is newer than the one served: loaded, checked and warmed
        beside the old one, then swapped in; requests already admitted finish on the old one. A version that
        fails at any step (read, card, sha256, load, warm-up, whatever the engine raises) is refused
        (ReloadRefusedError: one ERROR line, model_reloads_total{outcome="refused"}) and the old one keeps
        serving. `polled`: the poller's call, which skips a version refused before whose files are unchanged."""
        if self.settings.model_dir is None or self._repository is None:
            raise ReloadRefusedError("reload needs MODEL_DIR (versions); this service serves one MODEL_PATH file")
        async with self._lock:
            current = self.served
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
                candidate = await asyncio.to_thread(ServedModel.load, source, self.settings, self.metrics)
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
        async with self._lock:
            current, candidate = self.served, self.shadow
            if candidate is None:
                raise ReloadRefusedError(
                    f"no version is scored in shadow (ROLLOUT={self.settings.rollout}); still serving version "
                    f"{current.version}"
                )
            self.shadow = None
            self.quality.follow_shadow(None)
            self._serve(candidate, current)
            await self._keep_in_shadow(current)  # rollback by evidence needs the previous version scored
            return ReloadOutcome(current.version, candidate.version, swapped=True, shadow=self._shadow_version)

    async def _keep_in_shadow(self, previous: ServedModel) -> None:
        """After a promotion the previous version is loaded again from MODEL_DIR and scored in shadow, so the
        gate can find the promoted one worse and serve the previous one again (a promotion of it)."""
        if self._repository is None:
            return
        try:
            source = await asyncio.to_thread(self._repository.source, previous.version)
            again = await asyncio.to_thread(ServedModel.load, source, self.settings, self.metrics)
            await self._follow_in_shadow(again, source)
        except Exception as exc:  # noqa: BLE001  the promotion stands; only a rollback by evidence is lost
            log.error("version %s could not be scored in shadow after the promotion, so no rollback can be "
                      "decided: %s", previous.version, one_line(exc))

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
                 candidate.version, candidate.classifier.model_id[:12], self.served.version)

    def _spare(self) -> bool:
        """Serving leaves capacity: fewer images in flight than threads to run them."""
        return self.served.predictor.queued < lane_threads(self.settings)

    def _serve(self, candidate: ServedModel, current: ServedModel) -> None:
        """Swaps the checked candidate in; the old version drains what it admitted."""
        candidate.predictor.start()
        self.served = candidate
        if self._on_serve is not None:
            self._on_serve(candidate)
        self._label_served(candidate)
        self.metrics.reloads.labels("swapped").inc()
        drain = asyncio.create_task(current.predictor.stop(), name=f"drain-version-{current.version}")
        self._draining.add(drain)
        drain.add_done_callback(self._draining.discard)
        log.info("now serving version %s (%s), request path %s; version %s drains", candidate.version,
                 candidate.classifier.model_id[:12], candidate.describe_path(), current.version)

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
