"""Typed dependencies, so handlers state what they use and tests can override it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.core.failures import NotReadyError
from service.core.pipeline import Pipeline
from service.edge.security import check_api_key


def ready_pipeline(request: Request) -> Pipeline | None:
    """The pipeline once the model is loaded and warmed; None before that and while shutting down."""
    pipeline: Pipeline | None = getattr(request.state, "pipeline", None)
    return pipeline if pipeline is not None and pipeline.ready else None


# async, like every dependency on the request path: FastAPI runs a plain `def` dependency in its thread pool,
# a round trip to another thread per request that py-spy showed at one connection (BENCHMARKS.md).
async def get_pipeline(request: Request) -> Pipeline:
    pipeline = ready_pipeline(request)
    if pipeline is None:
        raise NotReadyError("the model is not loaded yet")
    return pipeline


PipelineDep = Annotated[Pipeline, Depends(get_pipeline)]


def serving(request: Request) -> Pipeline:
    """The hot routes' (/predict, /v2 infer) API key check, then their pipeline, in plain calls: FastAPI's
    dependency solving of the same two (with APIKeyHeader under the key) was about a third of the event loop's
    time per request in the app (cProfile, in process, 16 concurrent ELPV requests; BENCHMARKS.md). Their OpenAPI
    operations state the key with API_KEY_SECURITY."""
    check_api_key(request)
    pipeline = ready_pipeline(request)
    if pipeline is None:
        raise NotReadyError("the model is not loaded yet")
    return pipeline
