"""`/v2/...`: the Open Inference Protocol's REST endpoints, with its `{"error": ...}` error bodies.

The model's name is `name` in its model card and its version the card's `version` (else "1"). Inference
goes through the same Pipeline as /predict (admission, decode lanes, the version's predictor, deadline), with
MAX_FILES and MAX_FILE_BYTES applied per tensor; the body limit middleware already covers every route.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request, Response

from service.core.decode_memory import MB, DecodeBusyError
from service.core.failures import NotFoundError, NotReadyError, PayloadTooLargeError, UnsupportedMediaTypeError
from service.core.labels import label_for
from service.core.pipeline import EncodedImage, Pipeline
from service.core.served import ServedModel
from service.edge.deps import PipelineDep, ready_pipeline, serving
from service.edge.encoding import VERSION_HEADER
from service.edge.errors import V2_PREFIX
from service.edge.routes.v2 import codec
from service.edge.routes.v2.schemas import (
    InferenceRequest,
    InferenceResponse,
    Liveness,
    ModelMetadata,
    Readiness,
    ServerMetadata,
    V2Error,
)
from service.edge.security import API_KEY_SECURITY
from service.edge.uploads import arriving_by

SERVER_NAME = "cell-classifier"
EXTENSIONS = ["binary_tensor_data"]
# The platform names the engine that serves: Triton's name for onnxruntime, OpenVINO Model Server's for OpenVINO.
PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "openvino": "openvino"}
DEFAULT_VERSION = "1"


PREFIX = V2_PREFIX  # failures under it answer the protocol's `{"error": message}` (service.edge.errors)


_errors = {
    400: "malformed request or tensor (datatype, shape, data length, base64, JSON), or an undecodable image",
    401: "API_KEY is set and X-API-Key is missing or wrong",
    404: "no model of that name or version",
    408: "the request body took longer than REQUEST_TIMEOUT_S to arrive",
    413: "body, encoded image or declared pixel count over the limit",
    415: "a compressed body or an unsupported image format",
    503: "overloaded or not ready; retry after the Retry-After header's seconds",
}


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": V2Error, "description": _errors[code]} for code in codes}


# Bounded so a name is never a megabyte of URL in an error message; longer ones are 400.
ModelName = Annotated[str, Path(min_length=1, max_length=256, description="`name` in the model card")]
ModelVersion = Annotated[
    str, Path(min_length=1, max_length=64, description="MODEL_DIR's number, else the card's `version`, else 1")
]

router = APIRouter(prefix=PREFIX, tags=["Open Inference Protocol (KServe V2)"])


def served(pipeline: Pipeline, name: str, version: str | None) -> ServedModel:
    """The served model if `name` (and `version`, when given) are its own, else 404. Its version is the
    pipeline's: MODEL_DIR's folder number, else the card's `version`, else "1"."""
    model = pipeline.model
    if name != model.classifier.metadata.name:
        raise NotFoundError(f"no model '{name}': this server serves '{model.classifier.metadata.name}'")
    if version is not None and version != model.version:
        raise NotFoundError(f"model '{name}' has no version '{version}': it serves version '{model.version}'")
    return model


@router.get("", response_model=ServerMetadata)
async def server_metadata(request: Request) -> ServerMetadata:
    """Server metadata: name, version and protocol extensions."""
    return ServerMetadata(name=SERVER_NAME, version=request.app.version, extensions=EXTENSIONS)


@router.get("/health/live", response_model=Liveness)
async def live() -> Liveness:
    """The process is alive (it may still be loading the model)."""
    return Liveness(live=True)


@router.get("/health/ready", response_model=Readiness, responses=_responses(503))
async def ready(request: Request) -> Readiness:
    """Ready once the model is loaded and warmed; 503 before that and while shutting down."""
    if ready_pipeline(request) is None:
        raise NotReadyError("the model is not ready")
    return Readiness(ready=True)


def platform(model: ServedModel) -> str:
    """The protocol's `platform` for the engine that serves (both doors' metadata)."""
    return PLATFORMS.get(model.classifier.engine.name, model.classifier.engine.name)


def _metadata(model: ServedModel) -> ModelMetadata:
    return ModelMetadata(
        name=model.classifier.metadata.name,
        versions=[model.version],
        platform=platform(model),
        inputs=[spec.metadata() for spec in codec.INPUTS],
        outputs=[spec.metadata() for spec in codec.OUTPUTS],
    )


@router.get("/models/{name}", response_model=ModelMetadata, responses=_responses(400, 404, 503))
async def model_metadata(pipeline: PipelineDep, name: ModelName) -> ModelMetadata:
    """Model metadata: versions, inputs and outputs with their datatypes and shapes (-1: any batch size)."""
    return _metadata(served(pipeline, name, None))


@router.get("/models/{name}/versions/{version}", response_model=ModelMetadata, responses=_responses(400, 404, 503))
async def model_version_metadata(pipeline: PipelineDep, name: ModelName, version: ModelVersion) -> ModelMetadata:
    """Model metadata for one version."""
    return _metadata(served(pipeline, name, version))


async def _model_ready(request: Request, name: str, version: str | None) -> Readiness:
    pipeline: Pipeline | None = getattr(request.state, "pipeline", None)
    if pipeline is None:
        raise NotReadyError("the model is not loaded yet")
    served(pipeline, name, version)
    if not pipeline.ready:
        raise NotReadyError("the model is not ready")
    return Readiness(ready=True)


@router.get("/models/{name}/ready", response_model=Readiness, responses=_responses(400, 404, 503))
async def model_ready(request: Request, name: ModelName) -> Readiness:
    """The model is loaded, warmed and taking requests."""
    return await _model_ready(request, name, None)


@router.get("/models/{name}/versions/{version}/ready", response_model=Readiness, responses=_responses(400, 404, 503))
async def model_version_ready(request: Request, name: ModelName, version: ModelVersion) -> Readiness:
    """One version of the model is loaded, warmed and taking requests."""
    return await _model_ready(request, name, version)


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic schema with its `$defs` written in place: /docs and schemathesis resolve `#/...` against the
    whole OpenAPI document, where pydantic's local `#/$defs/...` do not exist (the models are not recursive)."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    return resolve(schema)


_infer_body = {
    "required": True,
    "content": {
        "application/json": {"schema": _inline_refs(InferenceRequest.model_json_schema())},
        "application/octet-stream": {
            "schema": {"type": "string", "format": "binary"},
            "description": f"binary tensor data extension: the JSON request ({codec.HEADER_LENGTH} bytes), "
            "then each binary input's data",
        },
    },
}
_infer_ok = {
    200: {
        "description": "the outputs, in JSON; or, when any output is binary, the JSON header and then the "
        f"binary data (its length in the {codec.HEADER_LENGTH} response header)",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}
_infer_responses = {**_infer_ok, **_responses(400, 401, 404, 408, 413, 415, 503)}

# Read as text and parsed by the codec: FastAPI's int would also take "123.0", "+123" and " 123 ".
HeaderLength = Annotated[
    str | None,
    Header(
        alias=codec.HEADER_LENGTH,
        description="length of the JSON header in bytes, in ASCII digits, when binary data follows it",
    ),
]


async def _read_tensors(
    pipeline: Pipeline, body: bytes, header_length: int | None, deadline: float
) -> tuple[codec.ModelInput, list[codec.OutputChoice], str | None]:
    """The request's input, outputs and id. Parsing its JSON reserves its estimated memory from the decode
    budget, as a decode does: over the whole budget is 413, a budget held by others past its wait 503. (The
    protocol names only 400 for a bad request; 413, as for a body over MAX_BODY_BYTES, says size is the fix.)"""
    limits = codec.Limits(pipeline.settings.max_files, pipeline.settings.max_file_bytes)
    cost = codec.parse_cost_bytes(body, header_length)
    budget = pipeline.budget
    if cost > budget.limit_bytes:
        raise PayloadTooLargeError(
            f"parsing this {len(body)}-byte JSON request needs an estimated {cost / MB:.0f} MB, more than the "
            f"decode memory budget of {budget.limit_bytes / MB:.0f} MB: send the image files as binary tensor "
            f"data (binary_data_size and {codec.HEADER_LENGTH}), or fewer per request"
        )
    try:
        async with budget.reserve(cost, deadline):
            parsed = codec.parse_request(body, header_length, limits)
            tensor = codec.read_input(parsed, limits)
            outputs = codec.choose_outputs(parsed.request)  # before inference: a bad output name costs no compute
            return tensor, outputs, parsed.request.id
    except DecodeBusyError as exc:
        raise pipeline.busy(f"decode memory is busy ({exc})") from exc


async def _infer(
    request: Request, pipeline: Pipeline, name: str, version: str | None, header_value: str | None
) -> Response:
    served(pipeline, name, version)
    settings = pipeline.settings
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise UnsupportedMediaTypeError(f"Content-Encoding {encoding} is not accepted: send the body uncompressed")
    deadline = pipeline.deadline()
    async with arriving_by(deadline, settings.request_timeout_s, "the body"):
        body = await request.body()
    tensor, outputs, request_id = await _read_tensors(pipeline, body, codec.header_length_of(header_value), deadline)
    if tensor.images is not None:
        images = [EncodedImage(f"image_bytes[{i}]", data) for i, data in enumerate(tensor.images)]
        answer = await pipeline.answer(images, deadline)
    else:
        answer = await pipeline.answer_arrays(list(tensor.pixels), deadline)  # type: ignore[arg-type]
    if version is not None and answer.model.version != version:
        # A reload swapped versions while this request waited; the protocol promises the version asked for.
        raise NotReadyError(f"version {version} was replaced by version {answer.model.version}: ask for that one")
    threshold, class_names = pipeline.threshold(), answer.model.classifier.metadata.class_names
    # Encoded images are logged by their file's sha256; FP32 tensors by their raw bytes'.
    logged = tensor.images if tensor.images is not None else [array.tobytes() for array in answer.inputs]
    ids = await pipeline.log_answer(logged, answer, threshold)
    encoded = codec.encode_response(
        model_name=answer.model.classifier.metadata.name,
        model_version=answer.model.version,
        request_id=request_id,
        outputs=outputs,
        probabilities=answer.probabilities,
        labels=[label_for(p, threshold, class_names) for p in answer.probabilities],
        ids=ids,
    )
    headers = {VERSION_HEADER: answer.model.version}
    if encoded.header_length is None:
        return Response(encoded.body, media_type="application/json", headers=headers)
    headers[codec.HEADER_LENGTH] = str(encoded.header_length)
    return Response(encoded.body, media_type="application/octet-stream", headers=headers)


# The two infer paths (FastAPI needs one function per path) share everything else of their route.
_infer_route: dict[str, Any] = {
    "response_model": InferenceResponse,
    "responses": _infer_responses,
    # The key and the pipeline are checked by service.edge.deps.serving, not solved as dependencies (hot path).
    "openapi_extra": {"requestBody": _infer_body, **API_KEY_SECURITY},
}


@router.post("/models/{name}/infer", **_infer_route)
async def infer(request: Request, name: ModelName, header_length: HeaderLength = None) -> Response:
    """Classify images sent as `image_bytes` (BYTES [N], encoded files) or `input` (FP32 [N,100,100,1], 0-255)."""
    return await _infer(request, serving(request), name, None, header_length)


@router.post("/models/{name}/versions/{version}/infer", **_infer_route)
async def infer_version(
    request: Request, name: ModelName, version: ModelVersion, header_length: HeaderLength = None
) -> Response:
    """Inference on one version of the model; the same inputs and outputs."""
    return await _infer(request, serving(request), name, version, header_length)
