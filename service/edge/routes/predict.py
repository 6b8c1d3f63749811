"""POST /predict: decode -> predict -> encode."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import Field, TypeAdapter, ValidationError

from service.edge.deps import serving
from service.edge.encoding import VERSION_HEADER, encode
from service.edge.schemas import ErrorResponse, PredictResponse
from service.edge.security import API_KEY_SECURITY
from service.edge.uploads import arriving_by, read_uploads

router = APIRouter()

_errors = {
    400: "not a decodable image (empty, truncated, garbage) or a malformed multipart body",
    401: "API_KEY is set and X-API-Key is missing or wrong",
    408: "the upload took longer than REQUEST_TIMEOUT_S",
    413: "body, file or declared pixel count over the limit, or one image needs more than the decode memory budget",
    415: "unsupported Content-Type or image format",
    422: "no 'file'/'files' field, an unexpected field, too many files, or a threshold outside 0..1",
    503: "overloaded (queue or decode memory budget full) or not ready; retry after the Retry-After header's seconds",
}
_binary = {"type": "string", "format": "binary"}
# The body is parsed by hand (three shapes share one route), so its schema is stated here for /docs.
_request_body = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "file": {**_binary, "description": "one image"},
                    "files": {"type": "array", "items": _binary, "minItems": 1, "description": "several images"},
                },
                # At least one image: a form with neither field is answered 422.
                "minProperties": 1,
            }
        },
        "image/*": {"schema": _binary},
        "application/octet-stream": {"schema": _binary},
    },
}


_THRESHOLD_WHY = "this request's decision threshold (default: the service's)"
# Read from the query string here rather than by FastAPI: its dependency solving for this one parameter was 7 %
# of the event loop's GIL samples at 16 connections (py-spy, BENCHMARKS.md). Same validation, same 422.
_threshold = TypeAdapter(Annotated[float, Field(ge=0, le=1)])
_threshold_parameter = {
    "name": "threshold", "in": "query", "required": False, "description": _THRESHOLD_WHY,
    "schema": {"anyOf": [{"type": "number", "minimum": 0, "maximum": 1}, {"type": "null"}], "title": "Threshold",
               "description": _THRESHOLD_WHY},
}


def requested_threshold(request: Request) -> float | None:
    """The `threshold` query parameter, validated as FastAPI would (0..1), or None when absent."""
    text = request.query_params.get("threshold")
    if text is None:
        return None
    try:
        return _threshold.validate_python(text)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("query", "threshold")} for error in exc.errors(include_url=False)]
        ) from exc


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses={code: {"model": ErrorResponse, "description": why} for code, why in _errors.items()},
    openapi_extra={"parameters": [_threshold_parameter], "requestBody": _request_body, **API_KEY_SECURITY},
)
async def predict(request: Request) -> Response:
    """Classify images: multipart `file` (or repeated `files`), or a raw image body."""
    threshold = requested_threshold(request)
    pipeline = serving(request)
    deadline = pipeline.deadline()
    settings = pipeline.settings
    async with arriving_by(deadline, settings.request_timeout_s):
        images = await read_uploads(request, settings.max_files, settings.max_file_bytes)
    answer = await pipeline.answer(images, deadline)
    names = [image.name for image in images]
    threshold = pipeline.threshold(threshold)
    ids = await pipeline.log_answer([image.data for image in images], answer, threshold)
    body = encode(answer.model, names, answer.probabilities, threshold, ids)
    # Serialised here: FastAPI would validate the model the service just built again, then serialise it.
    return Response(
        PredictResponse.__pydantic_serializer__.to_json(body), media_type="application/json",
        headers={VERSION_HEADER: answer.model.version},
    )
