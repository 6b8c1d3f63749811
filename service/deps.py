"""Typed dependencies, so handlers state what they use and tests can override it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from service.runtime import Runtime


def ready_runtime(request: Request) -> Runtime | None:
    """The runtime once the model is loaded and warmed; None before that and while shutting down."""
    runtime: Runtime | None = getattr(request.state, "runtime", None)
    return runtime if runtime is not None and runtime.ready else None


def get_runtime(request: Request) -> Runtime:
    runtime = ready_runtime(request)
    if runtime is None:
        raise HTTPException(503, "the model is not loaded yet", headers={"Retry-After": "1"})
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
