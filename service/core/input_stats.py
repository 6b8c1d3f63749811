"""Statistics of model inputs, the same for training and serving, and their drift.

Two numbers per preprocessed image (its mean gray level and its contrast, the standard deviation of its gray
levels) are binned on fixed edges. Training stores the distribution of its own inputs in the model card
(`input_statistics`); the service keeps the same bins over a sliding window of what it is sent and compares
them with the population stability index (PSI), the drift score credit-risk teams use: 0.1-0.25 is a shift
worth a look, above 0.25 a different population.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
from pydantic import BaseModel, Field

Statistic = Literal["mean_gray", "contrast"]
STATISTICS: Final[tuple[Statistic, ...]] = ("mean_gray", "contrast")
# Gray levels are 0-255; a standard deviation of gray levels cannot exceed 127.5.
EDGES: Final[dict[Statistic, tuple[float, ...]]] = {
    "mean_gray": tuple(np.linspace(0, 256, 17).tolist()),
    "contrast": tuple(np.linspace(0, 128, 17).tolist()),
}
# Keeps an empty bin from making the index infinite; 1e-4 is the customary floor.
PSI_FLOOR: Final = 1e-4


class Distribution(BaseModel):
    edges: list[float]
    fractions: list[float] = Field(description="share of images per bin; sums to 1")


class InputProfile(BaseModel):
    """The model card's `input_statistics`: how the training inputs were distributed."""

    images: int
    mean_gray: Distribution
    contrast: Distribution


def image_statistics(batch: np.ndarray | Sequence[np.ndarray]) -> dict[Statistic, np.ndarray]:
    """(N, 100, 100, 1) raw gray levels (an array, or a list of (100, 100, 1) arrays) -> each image's mean gray
    level and contrast.

    One pass for both moments (the variance as E[x^2] - E[x]^2, exact enough in float64 for 0-255 levels)
    instead of numpy's std, and a list converted straight to float64 (one copy, no separate stack). Served
    images are summarised one at a time by `summarize`, on the thread that decoded them."""
    flat = np.asarray(batch, dtype=np.float64).reshape(len(batch), -1)
    count = max(flat.shape[1], 1)
    mean = flat.sum(axis=1) / count
    variance = np.einsum("ij,ij->i", flat, flat) / count - mean * mean
    return {"mean_gray": mean, "contrast": np.sqrt(np.maximum(variance, 0.0))}


# The edges as arrays once, not per call: bin_index runs for every served image.
_EDGE_ARRAYS: Final = {name: np.asarray(edges) for name, edges in EDGES.items()}


def bin_index(statistic: Statistic, values: np.ndarray) -> np.ndarray:
    """The bin of each value; values beyond the last edge fall in the last bin."""
    edges = _EDGE_ARRAYS[statistic]
    return np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)


@dataclass(frozen=True, slots=True)
class ImageSummary:
    """One served input's statistics and their bins, computed on the worker thread that holds the image, so the
    event loop only appends them (DriftMonitor.record). With the numpy on the loop, the drift statistics were
    about a tenth of the loop's GIL time at 16 connections (py-spy; BENCHMARKS.md)."""

    mean_gray: float
    contrast: float
    mean_gray_bin: int
    contrast_bin: int


_LAST_BIN: Final = {name: len(edges) - 2 for name, edges in EDGES.items()}


def _bin(statistic: Statistic, value: float) -> int:
    """bin_index for one value, in plain Python (a 17-edge bisect; no array for one number)."""
    return min(max(bisect_right(EDGES[statistic], value) - 1, 0), _LAST_BIN[statistic])


def summarize(image: np.ndarray) -> ImageSummary:
    """One (100, 100, 1) model input -> its ImageSummary: the same moments as image_statistics, for one image."""
    flat = np.asarray(image, dtype=np.float64).ravel()
    count = max(flat.size, 1)
    mean = float(flat.sum()) / count
    contrast = max(float(flat @ flat) / count - mean * mean, 0.0) ** 0.5
    return ImageSummary(mean, contrast, _bin("mean_gray", mean), _bin("contrast", contrast))


def profile_of(batches: Iterable[np.ndarray]) -> InputProfile:
    counts = {name: np.zeros(len(EDGES[name]) - 1) for name in STATISTICS}
    images = 0
    for batch in batches:
        stats = image_statistics(batch)
        images += len(batch)
        for name in STATISTICS:
            counts[name] += np.bincount(bin_index(name, stats[name]), minlength=len(counts[name]))
    if images == 0:
        raise ValueError("no images to profile")
    return InputProfile(
        images=images,
        **{name: Distribution(edges=list(EDGES[name]), fractions=(counts[name] / images).tolist())
           for name in STATISTICS},
    )


def population_stability_index(expected: Sequence[float], observed: Sequence[float]) -> float:
    """sum((o - e) * ln(o / e)) over bins, both as fractions floored at PSI_FLOOR."""
    e = np.maximum(np.asarray(expected, np.float64), PSI_FLOOR)
    o = np.maximum(np.asarray(observed, np.float64), PSI_FLOOR)
    return float(np.sum((o - e) * np.log(o / e)))


class DriftMonitor:
    """The last `window` served inputs, binned like the training profile, and how many predictions lay near
    the decision threshold. Called from the event loop only (appends of summaries made on worker threads), so
    it needs no lock."""

    def __init__(self, profile: InputProfile | None, window: int, near_margin: float) -> None:
        self.profile = profile
        self.near_margin = near_margin
        self._bins: dict[Statistic, deque[int]] = {name: deque(maxlen=window) for name in STATISTICS}
        self._near: deque[bool] = deque(maxlen=window)

    def observe(
        self, batch: np.ndarray | Sequence[np.ndarray], probabilities: Sequence[float], threshold: float
    ) -> list[ImageSummary]:
        """Summarises the inputs here (numpy: off the event loop where it can be) and records them."""
        summaries = [summarize(image) for image in batch]
        self.record(summaries, probabilities, threshold)
        return summaries

    def record(self, summaries: Sequence[ImageSummary], probabilities: Sequence[float], threshold: float) -> None:
        """Inputs already summarised: appends only."""
        for summary in summaries:
            self._bins["mean_gray"].append(summary.mean_gray_bin)
            self._bins["contrast"].append(summary.contrast_bin)
        self._near.extend(abs(p - threshold) < self.near_margin for p in probabilities)

    @property
    def images(self) -> int:
        return len(self._near)

    def psi(self, statistic: Statistic) -> float:
        """NaN until an image was seen, or when the model card has no training profile to compare with."""
        if self.profile is None or not self._bins[statistic]:
            return float("nan")
        expected = getattr(self.profile, statistic).fractions
        counts = np.bincount(np.fromiter(self._bins[statistic], int), minlength=len(expected))
        return population_stability_index(expected, counts / counts.sum())

    def near_threshold_share(self) -> float:
        return float(np.mean(self._near)) if self._near else float("nan")
