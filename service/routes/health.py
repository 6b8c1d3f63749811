"""Liveness, readiness, model card and metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.deps import RuntimeDep, ready_runtime
from service.schemas import ErrorResponse, Health

router = APIRouter()


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive (it may still be loading the model)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": ErrorResponse}})
async def readyz(request: Request) -> Response:
    """Ready once the model is loaded and warmed; 503 before that and while shutting down."""
    if ready_runtime(request) is None:
        return JSONResponse({"detail": "the model is not ready"}, status_code=503, headers={"Retry-After": "1"})
    return JSONResponse({"status": "ready"})


@router.get("/model", responses={503: {"model": ErrorResponse}})
async def model(runtime: RuntimeDep) -> dict[str, Any]:
    """The served model's metadata: classes, threshold, input, preprocessing, test metrics, sha256; decode limits."""
    card = {**runtime.classifier.metadata.model_dump(), "id": runtime.classifier.model_id}
    return {**card, "limits": runtime.limits.as_dict()}  # issue 12: decode memory budget, max pixels


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
