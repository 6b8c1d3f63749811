"""Occlusion sensitivity, free of any web framework: where in the model's input does the prediction come from?

A patch of neutral gray slides over the 100x100 input; every occluded copy is classified by the same engine,
and each position scores how much the probability of the predicted class drops when that region is hidden.
A large drop means the region held evidence for the prediction (Zeiler & Fergus 2014, section 4.2).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np

from service.core.failures import InvalidRequestError
from service.core.labels import is_positive, label_for
from service.core.preprocessing import INPUT_SIZE

if TYPE_CHECKING:
    from service.core.pipeline import Pipeline
    from service.core.served import ServedModel

DEFAULT_PATCH: Final = 20
DEFAULT_STRIDE: Final = 10
# Mid-gray on the model's raw 0-255 scale: neither the dark ground nor the bright cell of an EL image.
FILL_LEVEL: Final = 128.0
SIDE: Final = INPUT_SIZE[0]


class OcclusionParameterError(InvalidRequestError):
    """Patch or stride out of range, or more occluded copies than allowed; the message names the fix."""


@dataclass(frozen=True)
class OcclusionGrid:
    """Patch positions over the SIDE x SIDE input: top-left corners at 0, stride, 2*stride, ... while the
    patch fits. When (SIDE - patch) is not a multiple of stride, the last few rows/columns of pixels are
    never covered (reported as `covered` in the JSON)."""

    patch: int = DEFAULT_PATCH
    stride: int = DEFAULT_STRIDE
    fill: float = FILL_LEVEL

    @classmethod
    def checked(cls, patch: int, stride: int, max_positions: int) -> OcclusionGrid:
        if not 1 <= patch <= SIDE:
            raise OcclusionParameterError(f"patch is {patch} px; it must be between 1 and {SIDE} (the input side)")
        if not 1 <= stride <= SIDE:
            raise OcclusionParameterError(f"stride is {stride} px; it must be between 1 and {SIDE}")
        grid = cls(patch, stride)
        if grid.positions > max_positions:
            raise OcclusionParameterError(
                f"patch {patch} px with stride {stride} px makes {grid.rows}x{grid.columns} = {grid.positions} "
                f"occluded copies; the limit is {max_positions} (EXPLAIN_MAX_OCCLUSIONS): "
                "use a larger stride or patch"
            )
        return grid

    @property
    def rows(self) -> int:
        return (SIDE - self.patch) // self.stride + 1

    @property
    def columns(self) -> int:
        return self.rows  # the input is square

    @property
    def positions(self) -> int:
        return self.rows * self.columns

    @property
    def covered(self) -> int:
        """Pixels from the top/left edge that some patch covers."""
        return (self.rows - 1) * self.stride + self.patch

    def box(self, row: int, column: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) in input pixels, x1/y1 exclusive."""
        x0, y0 = column * self.stride, row * self.stride
        return x0, y0, x0 + self.patch, y0 + self.patch

    def occluded(self, image: np.ndarray) -> np.ndarray:
        """(SIDE, SIDE, 1) input -> (positions, SIDE, SIDE, 1) copies, row-major, each with one patch filled."""
        copies = np.repeat(image[np.newaxis], self.positions, axis=0)
        for index in range(self.positions):
            x0, y0, x1, y1 = self.box(*divmod(index, self.columns))
            copies[index, y0:y1, x0:x1, :] = self.fill
        return copies


@dataclass(frozen=True)
class Explanation:
    """The prediction and, per grid position, the drop in the predicted class's probability."""

    image: np.ndarray  # (SIDE, SIDE, 1) raw 0-255: what the model saw
    grid: OcclusionGrid
    probability: float  # of the positive class, unoccluded
    label: str
    positive: bool  # whether the predicted class is the positive one
    drops: np.ndarray  # (rows, columns) float

    @classmethod
    def from_probabilities(
        cls, image: np.ndarray, grid: OcclusionGrid, base: float, occluded: Sequence[float],
        threshold: float, class_names: Sequence[str],
    ) -> Explanation:
        positive = is_positive(base, threshold)
        shifts = np.asarray(occluded, dtype=np.float64).reshape(grid.rows, grid.columns) - base
        # Probability of the predicted class before minus after: p(pos) falls or, for a negative
        # prediction, p(neg) = 1 - p(pos) falls when p(pos) rises.
        drops = -shifts if positive else shifts
        return cls(image, grid, float(base), label_for(base, threshold, class_names), positive, drops)

    @property
    def strongest(self) -> tuple[int, int]:
        """(row, column) of the largest drop: the region holding the most evidence for the prediction."""
        row, column = np.unravel_index(int(np.argmax(self.drops)), self.drops.shape)
        return int(row), int(column)

    def pixel_map(self) -> np.ndarray:
        """(SIDE, SIDE) mean drop over the patches covering each pixel; NaN where none does."""
        total = np.zeros((SIDE, SIDE))
        count = np.zeros((SIDE, SIDE))
        for (row, column), drop in np.ndenumerate(self.drops):
            x0, y0, x1, y1 = self.grid.box(row, column)
            total[y0:y1, x0:x1] += drop
            count[y0:y1, x0:x1] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    def as_dict(self) -> dict[str, object]:
        row, column = self.strongest
        x0, y0, x1, y1 = self.grid.box(row, column)
        return {
            "label": self.label,
            "probability": self.probability,
            "explains": f"drop in the probability of '{self.label}' when a gray patch hides the region",
            "grid": {
                "patch": self.grid.patch,
                "stride": self.grid.stride,
                "rows": self.grid.rows,
                "columns": self.grid.columns,
                "fill": self.grid.fill,
                "input_size": [SIDE, SIDE],
                "covered": self.grid.covered,
            },
            "drops": [[float(v) for v in row_values] for row_values in self.drops],
            "strongest": {
                "row": row,
                "column": column,
                "drop": float(self.drops[row, column]),
                "box": {"x0": x0, "y0": y0, "x1": x1, "y1": y1},
            },
        }


def explain_with(
    predict: Callable[[np.ndarray], np.ndarray], image: np.ndarray, grid: OcclusionGrid,
    threshold: float, class_names: Sequence[str], chunk: int = 32,
) -> Explanation:
    """Offline: `predict` is a Classifier.predict ((N, SIDE, SIDE, 1) -> (N,)), called in chunks of `chunk`."""
    batch = np.concatenate([image[np.newaxis], grid.occluded(image)])
    probabilities = np.concatenate([predict(batch[i : i + chunk]) for i in range(0, len(batch), chunk)])
    return Explanation.from_probabilities(
        image, grid, float(probabilities[0]), probabilities[1:].tolist(), threshold, class_names
    )


async def explain(
    pipeline: Pipeline, image: np.ndarray, grid: OcclusionGrid, deadline: float
) -> tuple[Explanation, ServedModel]:
    """In the service: every copy goes through the served version's predictor, a small chunk at a time.

    The predictor is first-come first-served, so chunks of EXPLAIN_CHUNK_IMAGES (at most MAX_BATCH_SIZE),
    each submitted only after the previous one is answered, mean a /predict request arriving meanwhile
    waits behind at most one chunk per explanation in flight, and an explanation never holds more than
    one chunk of queue slots (it cannot fill the queue and make /predict answer 503 by itself).
    A full queue or a passed deadline raises the pipeline's BusyError, like /predict; so does a newer
    model version taking over mid-way (a map must come from one model). Only the uploaded image counts
    in the drift metrics, not the copies made of it.
    """
    settings = pipeline.settings
    chunk = max(1, min(settings.explain_chunk_images, settings.max_batch_size, settings.max_queue_images))
    start = time.perf_counter()
    base = await pipeline.answer_arrays([image], deadline)
    copies = grid.occluded(image)
    probabilities: list[float] = []
    for i in range(0, len(copies), chunk):
        answer = await pipeline.answer_arrays(list(copies[i : i + chunk]), deadline, served_inputs=False)
        if answer.model is not base.model:
            raise pipeline.busy(
                f"model version {answer.model.version} took over from {base.model.version} during the explanation"
            )
        probabilities.extend(answer.probabilities)
    card = base.model.classifier.metadata
    result = Explanation.from_probabilities(
        image, grid, base.probabilities[0], probabilities, pipeline.threshold(), card.class_names
    )
    pipeline.metrics.observe_explanation(len(copies), time.perf_counter() - start)
    return result, base.model
