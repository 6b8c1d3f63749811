"""POST /feedback (the true label of a prediction) and GET /quality (live accuracy per model version)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Body, Depends
from pydantic import Field

from service.edge.deps import PipelineDep
from service.edge.schemas import ErrorResponse, FeedbackResponse, QualityResponse, VerdictIn, VerdictOut
from service.edge.security import require_api_key

router = APIRouter()

# One transaction per call: a line's worth of re-checked cells, not a bulk import.
MAX_VERDICTS = 1000
Verdicts = Annotated[list[VerdictIn], Field(min_length=1, max_length=MAX_VERDICTS)]
_store_errors = {
    401: {"model": ErrorResponse, "description": "API_KEY is set and X-API-Key is missing or wrong"},
    403: {"model": ErrorResponse, "description": "the prediction log is off (PREDICTION_LOG=false)"},
    503: {"model": ErrorResponse, "description": "the prediction log's database is not answering, or not ready"},
}


@router.post(
    "/feedback",
    response_model=FeedbackResponse,
    dependencies=[Depends(require_api_key)],
    responses={
        **_store_errors,
        400: {"model": ErrorResponse, "description": "the body is not JSON"},
        404: {"model": ErrorResponse,
              "description": "no logged prediction has this id after FEEDBACK_WAIT_S (nothing is recorded)"},
        422: {"model": ErrorResponse, "description": f"a label that is no class name; not 1-{MAX_VERDICTS} verdicts"},
    },
)
async def feedback(
    pipeline: PipelineDep,
    body: Annotated[VerdictIn | Verdicts, Body(description="one verdict, or a list of them (all or nothing)")],
) -> FeedbackResponse:
    """Records the true label of predictions; a new verdict for the same id replaces the old one."""
    verdicts = [body] if isinstance(body, VerdictIn) else body
    class_names = pipeline.classifier.metadata.class_names
    given = await pipeline.quality.give_verdicts([(v.id, v.label) for v in verdicts], class_names)
    pipeline.rollout.gate.poke()
    return FeedbackResponse(verdicts=[
        VerdictOut(id=v.id, version=v.version, predicted=v.predicted, label=v.label, correct=v.correct) for v in given
    ])


@router.get(
    "/quality", response_model=QualityResponse, dependencies=[Depends(require_api_key)], responses=_store_errors
)
async def quality(pipeline: PipelineDep) -> QualityResponse:
    """Per model version: accuracy, precision, recall and confusion matrix over its last verdicts; shadow agreement;
    the promotion gate and the last promotions and rollbacks."""
    report = await asyncio.to_thread(
        pipeline.quality.report, pipeline.classifier.metadata.class_names, pipeline.model.version,
        pipeline.rollout.shadow.version if pipeline.rollout.shadow is not None else None,
    )
    return QualityResponse.model_validate({**report, **await asyncio.to_thread(pipeline.rollout.gate.report)})
