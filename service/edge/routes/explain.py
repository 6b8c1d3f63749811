"""POST /explain (an occlusion map with the prediction) and POST /preprocess (the input the model sees)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from service.core.explain import (
    DEFAULT_PATCH,
    DEFAULT_STRIDE,
    SIDE,
    OcclusionGrid,
    explain,
)
from service.core.explain_render import SCALE, input_png, render_png
from service.core.pipeline import Answer, EncodedImage, Pipeline
from service.edge.deps import PipelineDep
from service.edge.encoding import PREDICTION_ID_HEADER, VERSION_HEADER, model_ref
from service.edge.routes.predict import _errors as predict_errors
from service.edge.schemas import ErrorResponse, ModelRef
from service.edge.security import require_api_key
from service.edge.uploads import arriving_by, read_uploads

router = APIRouter()

_one_image_body = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary", "description": "one image"}},
                "required": ["file"],
            }
        },
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}
_errors = {
    **predict_errors,
    422: "patch/stride out of range or over EXPLAIN_MAX_OCCLUSIONS copies, no 'file' field, or more than one file",
}
_png = {"content": {"image/png": {}}}


class GridInfo(BaseModel):
    patch: int = Field(description="side of the gray square, in input pixels")
    stride: int = Field(description="step between patch positions, in input pixels")
    rows: int
    columns: int
    fill: float = Field(description="gray level of the patch on the model's raw 0-255 scale")
    input_size: list[int] = Field(description="[height, width] of the model input")
    covered: int = Field(description="pixels from the top/left edge that some patch covers")


class Box(BaseModel):
    x0: int
    y0: int
    x1: int = Field(description="exclusive")
    y1: int = Field(description="exclusive")


class Strongest(BaseModel):
    row: int
    column: int
    drop: float
    box: Box = Field(description="the patch's pixels in the 100x100 input")


class ExplainResponse(BaseModel):
    id: str = Field(description="the prediction's id (a UUID): POST /feedback takes it with the true label")
    model: ModelRef
    filename: str | None
    label: str = Field(description="predicted class at the model's threshold")
    probability: float = Field(description="probability of the positive class, unoccluded")
    threshold: float
    explains: str
    grid: GridInfo
    drops: list[list[float]] = Field(
        description="rows x columns: how much the predicted class's probability drops with the patch there"
    )
    strongest: Strongest = Field(description="the position whose occlusion lowers the prediction most")


async def _one_image(request: Request, pipeline: Pipeline, deadline: float) -> tuple[EncodedImage, np.ndarray]:
    settings = pipeline.settings
    async with arriving_by(deadline, settings.request_timeout_s):
        images = await read_uploads(request, 1, settings.max_file_bytes)
    (array,) = await pipeline.decode(images, deadline)
    return images[0], array


def _wants_png(request: Request, format: str | None) -> bool:
    if format is not None:
        return format == "png"
    return "image/png" in request.headers.get("accept", "")


@router.post(
    "/explain",
    response_model=ExplainResponse,
    responses={
        200: {**_png, "description": f"JSON, or with Accept: image/png or ?format=png a PNG ({SCALE}x upscaled; "
              f"the prediction id in the {PREDICTION_ID_HEADER} header)"},
        **{code: {"model": ErrorResponse, "description": why} for code, why in _errors.items()},
    },
    openapi_extra={"requestBody": _one_image_body},
    dependencies=[Depends(require_api_key)],
)
async def explain_image(
    request: Request,
    pipeline: PipelineDep,
    patch: Annotated[int, Query(ge=1, le=SIDE, description="side of the gray patch in input pixels")] = DEFAULT_PATCH,
    stride: Annotated[int, Query(ge=1, le=SIDE, description="step between patch positions in input pixels")] = (
        DEFAULT_STRIDE
    ),
    format: Annotated[Literal["json", "png"] | None, Query(description="overrides the Accept header")] = None,
) -> Response:
    """Occlusion map for one image: how much the predicted class's probability drops where a gray patch hides it."""
    grid = OcclusionGrid.checked(patch, stride, pipeline.settings.explain_max_occlusions)  # 422 when out of range
    deadline = pipeline.deadline()
    image, array = await _one_image(request, pipeline, deadline)
    result, model = await explain(pipeline, array, grid, deadline)
    threshold = pipeline.threshold()
    (id,) = await pipeline.log_answer([image.data], Answer([result.probability], model, [array]), threshold)
    headers = {VERSION_HEADER: model.version, PREDICTION_ID_HEADER: id}
    if _wants_png(request, format):
        loop = asyncio.get_running_loop()
        png = await loop.run_in_executor(pipeline.decoder, render_png, result, threshold)
        return Response(png, media_type="image/png", headers=headers)
    body = ExplainResponse.model_validate(
        {
            "id": id,
            "model": model_ref(model),
            "filename": image.name,
            "threshold": threshold,
            **result.as_dict(),
        }
    )
    return JSONResponse(body.model_dump(mode="json"), headers=headers)


@router.post(
    "/preprocess",
    response_class=Response,
    responses={
        200: {**_png, "description": "the 100x100 8-bit grayscale input the model sees, pixel for pixel"},
        **{code: {"model": ErrorResponse, "description": why} for code, why in _errors.items()},
    },
    openapi_extra={"requestBody": _one_image_body},
    dependencies=[Depends(require_api_key)],
)
async def preprocess(request: Request, pipeline: PipelineDep) -> Response:
    """The model's input for one image, as a PNG: to see what the model saw, or to debug skew."""
    deadline = pipeline.deadline()
    _, array = await _one_image(request, pipeline, deadline)
    return Response(input_png(array), media_type="image/png")
