"""Liveness, readiness, model card and metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.core.failures import NotReadyError
from service.edge.deps import PipelineDep, ready_pipeline
from service.edge.encoding import VERSION_HEADER
from service.edge.schemas import ErrorResponse, Health

router = APIRouter()


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive (it may still be loading the model)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": ErrorResponse}})
async def readyz(request: Request) -> Response:
    """Ready once the model is loaded and warmed; 503 before that and while shutting down."""
    pipeline = ready_pipeline(request)
    if pipeline is None:
        raise NotReadyError("the model is not ready")
    return JSONResponse({"status": "ready"}, headers={VERSION_HEADER: pipeline.model.version})


@router.get("/model", responses={503: {"model": ErrorResponse}})
async def model(request: Request, pipeline: PipelineDep) -> dict[str, Any]:
    """The served model's metadata: classes, the positive class, threshold, input, preprocessing, test metrics,
    both hashes (`identity`); the version that answers, the threshold in effect (THRESHOLD's, else the model's),
    the request path and why (direct or batched, with the batch measurement), the decode limits and whether
    requests need an X-API-Key."""
    return {
        **pipeline.classifier.describe(),
        "version": pipeline.model.version,
        "effective_threshold": pipeline.threshold(),
        "request_path": pipeline.model.request_path.as_dict() if pipeline.model.request_path else None,
        "limits": pipeline.limits.as_dict(),
        "api_key_required": request.app.state.settings.api_key is not None,
    }


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
