"""Probabilities -> the response body."""

from __future__ import annotations

from collections.abc import Sequence

from service.model import Classifier
from service.schemas import ModelRef, Prediction, PredictResponse


def encode(classifier: Classifier, names: Sequence[str | None], probabilities: Sequence[float]) -> PredictResponse:
    """One prediction per image, in order; `names` are the client's file names (None where it sent none)."""
    negative, positive = classifier.metadata.class_names
    threshold = classifier.metadata.threshold
    return PredictResponse(
        model=ModelRef(
            id=classifier.model_id, name=classifier.metadata.name,
            engine=classifier.engine.name, precision=classifier.engine.precision,
        ),
        threshold=threshold,
        predictions=[
            Prediction(
                filename=name,
                probability=p,
                label=positive if p >= threshold else negative,
                scores={negative: 1.0 - p, positive: p},
            )
            for name, p in zip(names, probabilities, strict=True)
        ],
    )
