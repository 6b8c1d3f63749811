"""Typed dependencies, so handlers state what they use and tests can override it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from service.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime | None = getattr(request.state, "runtime", None)
    if runtime is None or not runtime.ready:
        raise HTTPException(503, "the model is not loaded yet", headers={"Retry-After": "1"})
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
