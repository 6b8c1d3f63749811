"""Probabilities -> the response body."""

from __future__ import annotations

from collections.abc import Sequence

from service.core.labels import label_for, scores_for
from service.core.served import ServedModel
from service.edge.schemas import ModelRef, Prediction, PredictResponse

# On every answer that comes from (or vouches for) a model: which version it was, without parsing the body.
VERSION_HEADER = "X-Model-Version"
# /explain's PNG answer carries its prediction id here (the JSON answers carry it in the body).
PREDICTION_ID_HEADER = "X-Prediction-Id"


def model_ref(model: ServedModel) -> ModelRef:
    """Which model answered: file sha256, name, version, engine and precision (every door's `model` object)."""
    classifier = model.classifier
    return ModelRef(
        id=classifier.model_id, card_sha256=classifier.metadata.sha256, name=classifier.metadata.name,
        version=model.version,
        engine=classifier.engine.name, precision=classifier.engine.precision,
        flip_averaged=classifier.metadata.flip_averaged,
    )


def encode(
    model: ServedModel, names: Sequence[str | None], probabilities: Sequence[float], threshold: float,
    ids: Sequence[str],
) -> PredictResponse:
    """One prediction per image, in order; `names` are the client's file names (None where it sent none), `ids`
    the prediction ids."""
    class_names = model.classifier.metadata.class_names
    return PredictResponse(
        model=model_ref(model),
        threshold=threshold,
        predictions=[
            Prediction(
                id=id,
                filename=name,
                probability=p,
                label=label_for(p, threshold, class_names),
                scores=scores_for(p, class_names),
            )
            for id, name, p in zip(ids, names, probabilities, strict=True)
        ],
    )
