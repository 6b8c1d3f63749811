"""The predict step's seam: what every predictor of a served version offers, admission included.

Three predictors implement it: `DirectPredictor` (each image run on the thread that decoded it), `MicroBatcher`
(images gathered into batches for one inference thread) and the Ray ingress's `RemoteModel` (a Ray Serve
deployment). The pipeline admits a request's images through `Admission` before it decodes them, runs
`on_decode_thread` (where the predictor has one) on the decoding thread, else `predict` once they are decoded,
and releases them when the request ends: it never asks which predictor it holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

import numpy as np

from service.core.failures import OverloadedError


class Admission:
    """Images admitted and not yet answered: all of a request's images together or none, refused while closed
    (before start, and from stop on) or, with a `limit`, beyond it. The one place that says "shutting down".

    Touched on the event loop only."""

    def __init__(self, limit: int | None = None) -> None:
        self._limit = limit
        self._in_flight = 0
        self._accepting = False
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def accepting(self) -> bool:
        """True between open() and close(): the one readiness flag of the service."""
        return self._accepting

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def open(self) -> None:
        self._accepting = True

    def close(self) -> None:
        self._accepting = False

    def admit(self, images: int) -> None:
        """Raises OverloadedError; each admit is followed by one release of the same count."""
        if not self._accepting:
            raise OverloadedError("the service is shutting down")
        if self._limit is not None and self._in_flight + images > self._limit:
            raise OverloadedError(f"{self._in_flight} images are in flight")
        self._in_flight += images
        self._idle.clear()

    def release(self, images: int) -> None:
        self._in_flight -= images
        if self._in_flight == 0:
            self._idle.set()

    @contextmanager
    def held(self, images: int) -> Iterator[None]:
        self.admit(images)
        try:
            yield
        finally:
            self.release(images)

    async def drained(self) -> None:
        """Returns once every admitted image is released."""
        await self._idle.wait()


class Predictor(Protocol):
    """A served version's predict step. `admission` bounds and refuses work; `queued` is what the predictor
    itself holds (the queue-depth gauge, the shadow's idea of spare capacity)."""

    @property
    def admission(self) -> Admission: ...

    @property
    def queued(self) -> int: ...

    @property
    def on_decode_thread(self) -> Callable[[np.ndarray], float] | None:
        """Runs one decoded image on the thread that decoded it (the direct path), or None: `predict` then."""

    def start(self) -> None: ...

    async def stop(self) -> None:
        """Closes admission, answers every admitted image, then frees the predictor's threads."""

    async def predict(self, images: Sequence[np.ndarray]) -> list[float]:
        """Preprocessed (100, 100, 1) images already admitted -> their probabilities, in order."""
