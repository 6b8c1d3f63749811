"""POST /admin/reload: serve MODEL_DIR's newest version now (also done by polling when configured), or with
ROLLOUT=shadow score it in shadow; POST /admin/promote: serve the version scored in shadow."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from service.core.failures import ForbiddenError
from service.edge.deps import PipelineDep
from service.edge.schemas import ErrorResponse, ReloadResponse
from service.edge.security import require_api_key


def require_configured_key(request: Request) -> None:
    # An admin action must never be open: without a key there is nobody to trust.
    if request.app.state.settings.api_key is None:
        raise ForbiddenError(f"POST {request.url.path} is off: set API_KEY to use it (and send it in X-API-Key)")


router = APIRouter()


def _admin_responses(conflict: str) -> dict[int | str, dict[str, object]]:
    """The error answers every admin endpoint documents; `conflict` says what its 409 means."""
    why = {
        401: "X-API-Key missing or wrong",
        403: "no API_KEY is set, so the endpoint is off",
        409: conflict,
        503: "not ready yet",
    }
    return {code: {"model": ErrorResponse, "description": text} for code, text in why.items()}


@router.post(
    "/admin/reload",
    response_model=ReloadResponse,
    response_model_exclude_none=True,  # `shadow` only when ROLLOUT=shadow put a version there
    dependencies=[Depends(require_configured_key), Depends(require_api_key)],
    responses=_admin_responses("the newer version failed its checks; the old one serves"),
)
async def reload(pipeline: PipelineDep) -> ReloadResponse:
    """Loads, checks and warms MODEL_DIR's highest version beside the served one, then swaps it in."""
    outcome = await pipeline.rollout.reload()
    return ReloadResponse(
        previous=outcome.previous, serving=outcome.serving, swapped=outcome.swapped, shadow=outcome.shadow
    )


@router.post(
    "/admin/promote",
    response_model=ReloadResponse,
    response_model_exclude_none=True,
    dependencies=[Depends(require_configured_key), Depends(require_api_key)],
    responses=_admin_responses("no version is scored in shadow"),
)
async def promote(pipeline: PipelineDep) -> ReloadResponse:
    """Serves the version scored in shadow (ROLLOUT=shadow); requests already admitted finish on the old one. The
    previous version is scored in shadow from then on; the decision is an audit row of the prediction log."""
    outcome = await pipeline.rollout.gate.promote()
    return ReloadResponse(
        previous=outcome.previous, serving=outcome.serving, swapped=outcome.swapped, shadow=outcome.shadow
    )
