"""Shadow scoring: a version loaded and checked but not served answers a share of live images, off the request
path and with spare capacity only.

The request path offers each sampled image with `put_nowait` on a small bounded queue; one thread with a
one-thread engine session scores what it takes, at the lowest CPU priority (nice 19). Spare capacity is checked
at both ends: an image is offered only while fewer served images are in flight than there are threads to run
them, and scored only once serving has been quiet for QUIET_S (no image offered meanwhile) with that still true;
an image that finds no such moment within MAX_WAIT_S is skipped. Priority alone does not do it: measured on 2
vCPUs, a one-thread shadow inference (15 ms, INT8) beside the served one slowed it whatever its nice value (the
vCPUs share a core), and halved requests/s at one connection. So under steady load the shadow scores little,
and shadow_images_total{outcome} shows the share scored.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from service.core.failures import one_line
from service.core.labels import label_for
from service.core.quality.records import Answerer, ImageFacts, PredictionRecord

log = logging.getLogger(__name__)

SCORED, SKIPPED, FAILED = "scored", "skipped", "failed"
LOWEST_PRIORITY = 19
# Longer than the gap between back-to-back requests of one client (a few ms) and than one shadow inference, so
# a steady stream of requests leaves no moment to the shadow.
QUIET_S = 0.05
MAX_WAIT_S = 1.0
_STOP = object()


@dataclass(frozen=True)
class ShadowModel:
    answerer: Answerer
    infer: Callable[[np.ndarray], np.ndarray]  # (N, 100, 100, 1) -> (N,) probabilities, thread-safe
    threshold: float  # the version's own (THRESHOLD, else its card's): it is judged as it would serve


@dataclass(frozen=True)
class _Job:
    model: ShadowModel
    id: str
    image: ImageFacts
    array: np.ndarray


class ShadowScorer:
    def __init__(
        self, *, sample: float, max_queue: int, on_record: Callable[[PredictionRecord], None],
        on_count: Callable[[str], None] = lambda outcome: None, draw: Callable[[], float] = random.random,
        quiet_s: float = QUIET_S,
    ) -> None:
        self.sample = sample
        self._queue: queue.Queue[object] = queue.Queue(max_queue)
        self._on_record = on_record
        self._on_count = on_count
        self._draw = draw
        self._model: ShadowModel | None = None
        self._spare: Callable[[], bool] = lambda: True
        self._quiet_s = quiet_s
        self._last_activity = 0.0  # when serving last offered an image (time.monotonic)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._failures: set[str] = set()

    @property
    def model(self) -> ShadowModel | None:
        return self._model

    def follow(self, model: ShadowModel | None, spare: Callable[[], bool] = lambda: True) -> None:
        """Scores with `model` from now on, while `spare()` says serving leaves capacity (None: no shadow;
        images queued for an old one are still scored)."""
        self._spare = spare
        self._model = model

    def offer(self, id: str, image: ImageFacts, array: np.ndarray) -> None:
        model = self._model
        if model is None:
            return
        self._last_activity = time.monotonic()
        if self.sample <= 0 or (self.sample < 1 and self._draw() >= self.sample):
            return
        if not self._spare():
            self._on_count(SKIPPED)
            return
        try:
            self._queue.put_nowait(_Job(model, id, image, array))
        except queue.Full:
            self._on_count(SKIPPED)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="shadow-scorer", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ends the thread after what is queued (a few images)."""
        if self._thread is None:
            return
        self._stopping = True
        try:
            self._queue.put(_STOP, timeout=timeout_s)
        except queue.Full:
            log.warning("the shadow scorer did not take the stop marker in %g s", timeout_s)
        self._thread.join(timeout_s)
        self._thread = None

    def _run(self) -> None:
        lower_own_priority()
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            assert isinstance(job, _Job)
            if self._quiet_moment():
                self._score(job)
            else:  # serving stayed busy
                self._on_count(SKIPPED)

    def _quiet_moment(self) -> bool:
        """Waits (at most MAX_WAIT_S) until serving has offered nothing for quiet_s and has spare threads."""
        deadline = time.monotonic() + MAX_WAIT_S
        while not self._stopping:
            quiet_for = time.monotonic() - self._last_activity
            if quiet_for >= self._quiet_s and self._spare():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(max(self._quiet_s - quiet_for, 0.005))
        return False

    def _score(self, job: _Job) -> None:
        model = job.model
        try:
            probability = float(model.infer(job.array[np.newaxis])[0])
        except Exception as exc:  # noqa: BLE001  a failing shadow never touches serving: counted, logged once per reason
            self._on_count(FAILED)
            reason = one_line(exc)
            if reason not in self._failures:
                self._failures.add(reason)
                log.warning("shadow version %s failed to score an image: %s", model.answerer.version, reason)
            return
        label = label_for(probability, model.threshold, model.answerer.class_names)
        self._on_record(PredictionRecord.of(job.id, "shadow", model.answerer, probability, label, model.threshold,
                                            job.image))
        self._on_count(SCORED)


def lower_own_priority() -> None:
    """nice 19 for the calling thread alone (Linux keeps a nice value per thread); elsewhere a no-op."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST_PRIORITY)
    except (AttributeError, OSError) as exc:
        log.info("the shadow scorer runs at normal priority: %s", one_line(exc))
