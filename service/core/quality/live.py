"""Live quality, the one object the pipeline holds: ids and rows for answers, verdicts, scores per version."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.core.config import QualitySettings
from service.core.failures import ForbiddenError, InvalidRequestError, NotFoundError, StoreUnavailableError, one_line
from service.core.labels import label_for
from service.core.metrics import Metrics
from service.core.quality.log import DROP_REASONS, PredictionLog
from service.core.quality.records import Answerer, ImageFacts, PredictionRecord, new_id
from service.core.quality.report import quality_report
from service.core.quality.scores import Scores
from service.core.quality.shadow import SCORED, SKIPPED, ShadowModel, ShadowScorer
from service.core.quality.store import Store, sqlite_url

log = logging.getLogger(__name__)

# Images that come through the decode lanes are hashed there (Pipeline, service.core.lanes). Others (/v2
# tensors) are hashed on the event loop up to this many bytes per request (~0.3 ms with SHA extensions),
# larger ones on a thread.
HASH_INLINE_BYTES = 512 * 1024
# A verdict for an id not in the log yet (answered a moment ago, here or by another replica) looks again after
# FIRST_LOOK_S, doubling up to LAST_LOOK_S, for FEEDBACK_WAIT_S: each look is one primary-key lookup.
FIRST_LOOK_S = 0.02
LAST_LOOK_S = 0.25
# An answer waits at most this for its row to reach the spool (a disk that hangs must not hold answers).
SPOOLED_ANSWER_WAIT_S = 1.0


@dataclass(frozen=True)
class Verdict:
    id: str
    version: str
    predicted: str
    label: str

    @property
    def correct(self) -> bool:
        return self.predicted == self.label


class LiveQuality:
    def __init__(self, settings: QualitySettings, metrics: Metrics, store: Store | None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store = store
        self.log = (
            PredictionLog(
                store, max_queue=settings.prediction_log_queue, retention_s=settings.prediction_log_retention_s,
                on_drop=lambda reason, rows: metrics.log_dropped.labels(reason).inc(rows),
                on_write=metrics.log_rows.inc,
                spool_dir=settings.prediction_log_spool_dir or settings.data_dir,
                spool_bytes=settings.prediction_log_spool_bytes,
            )
            if store is not None else None
        )
        self.shadow = ShadowScorer(
            sample=settings.shadow_sample, max_queue=settings.shadow_queue,
            on_record=self.log.put if self.log is not None else lambda record: None,
            on_count=lambda outcome: metrics.shadow_images.labels(outcome).inc(),
        )
        for reason in DROP_REASONS:
            metrics.log_dropped.labels(reason)
        for outcome in (SCORED, SKIPPED):
            metrics.shadow_images.labels(outcome)

    @classmethod
    def open(cls, settings: QualitySettings, metrics: Metrics) -> LiveQuality:
        """The store is opened lazily (first write or query), so a database down at start-up delays nothing."""
        store = None
        if settings.prediction_log:
            url = settings.prediction_log_url.get_secret_value() if settings.prediction_log_url else None
            store = Store(url or sqlite_url(settings.data_dir))
        return cls(settings, metrics, store)

    def start(self) -> None:
        if self.log is not None:
            self.log.start()
            self.metrics.log_queue.set_function(lambda: self.log.queued if self.log else 0)
            self.metrics.log_spool_rows.set_function(lambda: self.log.spooled if self.log else 0)
            self.metrics.log_spool_bytes.set_function(lambda: self.log.spooled_bytes if self.log else 0)
            self.metrics.log_spool_since.set_function(lambda: (self.log.spooled_since or 0) if self.log else 0)
            log.info("prediction log: %s", self.store.where if self.store else "off")
        self.shadow.start()

    def stop(self) -> None:
        """Blocking: scores what the shadow has queued, then writes every queued row."""
        self.shadow.stop()
        if self.log is not None:
            self.log.stop()
        if self.store is not None:
            self.store.close()

    # --- the request path --------------------------------------------------------------------------------

    @property
    def hashes_images(self) -> bool:
        """Whether answers need their images' sha256 (a row to log or an input to offer the shadow)."""
        return self.log is not None or self.shadow.model is not None

    async def record(
        self, answerer: Answerer, images: Sequence[bytes], probabilities: Sequence[float], threshold: float,
        inputs: Sequence[np.ndarray] = (), sha256s: Sequence[str | None] = (),
    ) -> list[str]:
        """A new id per answer, in order; the rows queued (never waited for) and the inputs offered to the shadow.
        `sha256s`: the images' hashes where the decode threads made them already."""
        ids = [new_id() for _ in probabilities]
        if self.log is None and self.shadow.model is None:
            return ids
        keep = self.settings.prediction_log_images
        if len(sha256s) == len(images) and all(sha256s):
            facts = [ImageFacts(sha256, len(data), data if keep else None)  # type: ignore[arg-type]
                     for sha256, data in zip(sha256s, images, strict=True)]
        elif sum(len(data) for data in images) <= HASH_INLINE_BYTES:
            facts = [ImageFacts.of(data, keep=keep) for data in images]
        else:
            facts = await asyncio.to_thread(lambda: [ImageFacts.of(data, keep=keep) for data in images])
        if self.log is not None:
            for id, probability, image in zip(ids, probabilities, facts, strict=True):
                label = label_for(probability, threshold, answerer.class_names)
                self.log.put(PredictionRecord.of(id, "served", answerer, probability, label, threshold, image))
            if self.log.spooled:
                # The store is failing: answer once the rows are on the spool's disk (one transaction, a few
                # ms), so a SIGKILL during the outage loses no answered row. Measured: with the answer sent
                # first, a SIGKILL under 4 clients lost 1 row of 1,598 (bench/quality_faults.py).
                await self.log.until_handled(SPOOLED_ANSWER_WAIT_S)
        if self.shadow.model is not None:
            for id, image, array in zip(ids, facts, inputs, strict=False):
                self.shadow.offer(id, image, array)
        return ids

    def follow_shadow(self, model: ShadowModel | None, spare: Callable[[], bool] = lambda: True) -> None:
        self.shadow.follow(model, spare)
        self.metrics.shadow_version.clear()
        if model is not None:
            self.metrics.shadow_version.labels(model.answerer.version).set(1)

    # --- verdicts and scores (blocking: called through asyncio.to_thread) ----------------------------------

    def _store(self, door: str) -> Store:
        if self.store is None:
            raise ForbiddenError(f"{door} needs the prediction log, which is off: set PREDICTION_LOG=true")
        return self.store

    async def give_verdicts(self, verdicts: Sequence[tuple[str, str]], class_names: Sequence[str]) -> list[Verdict]:
        """All or nothing: every label must be a class name and every id a logged served answer. An id not in the
        log yet (its row still queued here, or being written by the replica that answered) is looked for again
        for FEEDBACK_WAIT_S, on the event loop, before the 404."""
        store = self._store("POST /feedback")
        for _, label in verdicts:
            if label not in class_names:
                raise InvalidRequestError(f"unknown label '{label}': the model's classes are {list(class_names)}")
        ids = [id for id, _ in verdicts]
        try:
            found = await asyncio.to_thread(store.served, ids)
            deadline = time.monotonic() + self.settings.feedback_wait_s
            pause = FIRST_LOOK_S
            while len(found) < len(set(ids)) and (left := deadline - time.monotonic()) > 0:
                await asyncio.sleep(min(pause, left))
                pause = min(pause * 2, LAST_LOOK_S)
                found |= await asyncio.to_thread(store.served, [id for id in set(ids) if id not in found])
            missing = [id for id in ids if id not in found]
            if missing:
                raise NotFoundError(
                    f"no logged prediction with id {', '.join(missing[:5])} (looked for "
                    f"FEEDBACK_WAIT_S={self.settings.feedback_wait_s:g} s): ids come from /predict, /explain or "
                    f"/v2 answers and are kept PREDICTION_LOG_RETENTION_S "
                    f"({self.settings.prediction_log_retention_s:.0f} s)"
                )
            await asyncio.to_thread(self._judge, store, verdicts, ids, class_names)
        except NotFoundError:
            raise
        except Exception as exc:
            raise self._unavailable(exc) from exc
        given = [Verdict(id, found[id].version, found[id].label, label) for id, label in verdicts]
        for verdict in given:
            self.metrics.feedback.labels(verdict.version, "correct" if verdict.correct else "wrong").inc()
        return given

    def _judge(self, store: Store, verdicts: Sequence[tuple[str, str]], ids: list[str],
               class_names: Sequence[str]) -> None:
        """Blocking: records the verdicts, then sets the gauges of every version they judge."""
        store.give_verdicts(verdicts, time.time())
        for version in store.versions_of(ids):
            self.scores(store, version, class_names)

    def report(self, class_names: Sequence[str], served: str, shadow: str | None) -> dict[str, Any]:
        """GET /quality (`service.core.quality.report`)."""
        try:
            return quality_report(self, self._store("GET /quality"), class_names, served, shadow)
        except ForbiddenError:
            raise
        except Exception as exc:
            raise self._unavailable(exc) from exc

    def scores(self, store: Store, version: str, class_names: Sequence[str]) -> Scores:
        """The version's scores, also set on its gauges."""
        scores = Scores.of(store.recent_verdicts(version, self.settings.quality_window), class_names)
        self.metrics.verdicts.labels(version).set(scores.verdicts)
        for gauge, value in ((self.metrics.accuracy, scores.accuracy), (self.metrics.precision, scores.precision),
                             (self.metrics.recall, scores.recall)):
            gauge.labels(version).set(math.nan if value is None else value)
        return scores

    def count(self, name: str, **labels: str) -> int:
        """This process's count of a counter series (other replicas count their own)."""
        return int(self.metrics.registry.get_sample_value(name, labels) or 0)

    def _unavailable(self, exc: Exception) -> StoreUnavailableError:
        log.warning("the prediction log's store failed a query: %s", one_line(exc))
        where = self.store.where if self.store else "the store"
        waiting = ""
        if self.log is not None and self.log.spooled_since is not None:
            waiting = (f"; {self.log.spooled} rows wait in this process's spool since "
                       f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(self.log.spooled_since))}")
        return StoreUnavailableError(f"the prediction log ({where}) is not answering{waiting}; try again later")
