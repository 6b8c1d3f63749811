"""Probabilities -> the response body."""

from __future__ import annotations

from collections.abc import Sequence

from service.model import Classifier
from service.schemas import ModelRef, Prediction, PredictResponse
from service.uploads import Upload


def encode(classifier: Classifier, uploads: Sequence[Upload], probabilities: Sequence[float]) -> PredictResponse:
    negative, positive = classifier.metadata.class_names
    threshold = classifier.metadata.threshold
    return PredictResponse(
        model=ModelRef(id=classifier.model_id, name=classifier.metadata.name),
        threshold=threshold,
        predictions=[
            Prediction(
                filename=upload.filename,
                probability=p,
                label=positive if p >= threshold else negative,
                scores={negative: 1.0 - p, positive: p},
            )
            for upload, p in zip(uploads, probabilities, strict=True)
        ],
    )
