"""The protocol's GRPCInferenceService over the one Pipeline, as the HTTP /v2 routes use it.

Each call is a few lines: check, convert (`tensors`), call the pipeline, convert back. Failures are the
pipeline's domain errors, answered with the code of the edge's one table (`service.edge.errors.grpc_code_for`);
a retryable one (busy, not ready) carries `retry-after` (seconds) in its trailing metadata.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage

from service.core.config import Settings
from service.core.failures import (
    BusyError,
    MalformedRequestError,
    NotReadyError,
    RequestTimeoutError,
    ServiceError,
    UnauthorizedError,
)
from service.core.labels import label_for
from service.core.pipeline import EncodedImage, Pipeline, ServedModel
from service.core.preprocessing import ImageError
from service.edge.errors import grpc_code_for
from service.edge.grpc import grpc_predict_v2_pb2 as pb
from service.edge.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from service.edge.grpc import tensors
from service.edge.routes.v2 import codec
from service.edge.routes.v2.routes import EXTENSIONS, SERVER_NAME, platform, served

log = logging.getLogger(__name__)

API_KEY_METADATA = "x-api-key"
RETRY_AFTER_METADATA = "retry-after"
# uvloop (uvicorn's loop) keeps time in whole milliseconds: a timeout at the deadline may fire with the loop's
# clock up to a millisecond short of it (a client's 300 ms deadline was once answered "busy" for that).
TIMER_SLACK_S = 0.01
T = TypeVar("T")
Context = grpc.aio.ServicerContext


@dataclass(frozen=True)
class Unreadable:
    """A request whose bytes are not its message: answered INVALID_ARGUMENT by the servicer (gRPC itself would
    answer a deserializer's exception INTERNAL, a server fault, for the client's bad bytes)."""

    reason: str


Message = Any  # the call's request message, or Unreadable


def lenient(message: type[ProtoMessage]) -> Callable[[bytes], ProtoMessage | Unreadable]:
    """A request deserializer that never raises."""

    def read(data: bytes) -> ProtoMessage | Unreadable:
        try:
            return message.FromString(data)
        except DecodeError as exc:
            return Unreadable(str(exc) or "it does not parse")

    return read


def handlers(servicer: InferenceServicer) -> grpc.GenericRpcHandler:
    """The service's six calls on `servicer`, as the generated add_GRPCInferenceServiceServicer_to_server
    registers them, but with lenient deserializers."""
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    calls = {
        method.name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=lenient(getattr(pb, method.input_type.name)),
            response_serializer=getattr(pb, method.output_type.name).SerializeToString,
        )
        for method in service.methods
    }
    return grpc.method_handlers_generic_handler(service.full_name, calls)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """The six calls of the protocol's gRPC service, over `pipeline`."""

    def __init__(self, pipeline: Pipeline, settings: Settings, server_version: str) -> None:
        self._pipeline = pipeline
        self._settings = settings
        self._server_version = server_version
        self._limits = codec.Limits(settings.max_files, settings.max_file_bytes)
        self._metrics = pipeline.metrics

    async def ServerLive(self, request: Message, context: Context) -> pb.ServerLiveResponse:
        return await self._answer("ServerLive", request, context, self._live)

    async def ServerReady(self, request: Message, context: Context) -> pb.ServerReadyResponse:
        return await self._answer("ServerReady", request, context, self._ready)

    async def ModelReady(self, request: Message, context: Context) -> pb.ModelReadyResponse:
        return await self._answer("ModelReady", request, context, self._model_ready)

    async def ServerMetadata(self, request: Message, context: Context) -> pb.ServerMetadataResponse:
        return await self._answer("ServerMetadata", request, context, self._server_metadata)

    async def ModelMetadata(self, request: Message, context: Context) -> pb.ModelMetadataResponse:
        return await self._answer("ModelMetadata", request, context, self._model_metadata)

    async def ModelInfer(self, request: Message, context: Context) -> pb.ModelInferResponse:
        return await self._answer("ModelInfer", request, context, self._infer)

    # ---- the calls, without gRPC's error plumbing -------------------------------------------------------------

    async def _live(self, request: pb.ServerLiveRequest, context: Context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def _ready(self, request: pb.ServerReadyRequest, context: Context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._pipeline.ready)

    def _served(self, name: str, version: str) -> ServedModel:
        return served(self._pipeline, name, version or None)  # "" is proto3's unset: the served version

    async def _model_ready(self, request: pb.ModelReadyRequest, context: Context) -> pb.ModelReadyResponse:
        self._served(request.name, request.version)
        return pb.ModelReadyResponse(ready=self._pipeline.ready)

    async def _server_metadata(self, request: pb.ServerMetadataRequest, context: Context) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=self._server_version, extensions=EXTENSIONS)

    async def _model_metadata(self, request: pb.ModelMetadataRequest, context: Context) -> pb.ModelMetadataResponse:
        model = self._served(request.name, request.version)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=model.classifier.metadata.name,
            versions=[model.version],
            platform=platform(model),
            inputs=[tensor(name=s.name, datatype=s.datatype, shape=s.shape) for s in codec.INPUTS],
            outputs=[tensor(name=s.name, datatype=s.datatype, shape=s.shape) for s in codec.OUTPUTS],
        )

    async def _infer(self, request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        self._check_key(context)
        pipeline = self._pipeline
        if not pipeline.ready:
            raise NotReadyError("the model is not ready")
        version = request.model_version or None
        served(pipeline, request.model_name, version)
        call = tensors.read_request(request, self._limits)
        deadline, the_clients = self._deadline(context)
        try:
            if call.tensor.images is not None:
                images = [EncodedImage(f"image_bytes[{i}]", data) for i, data in enumerate(call.tensor.images)]
                answer = await pipeline.answer(images, deadline)
            else:
                answer = await pipeline.answer_arrays(list(call.tensor.pixels), deadline)  # type: ignore[arg-type]
        except BusyError as exc:
            if the_clients and asyncio.get_running_loop().time() >= deadline - TIMER_SLACK_S:
                raise RequestTimeoutError(f"the call's deadline passed before it was answered ({exc})") from exc
            raise
        if version is not None and answer.model.version != version:
            # A reload swapped versions while this request waited; the protocol promises the version asked for.
            raise NotReadyError(f"version {version} was replaced by version {answer.model.version}: ask for that one")
        threshold, class_names = pipeline.threshold(), answer.model.classifier.metadata.class_names
        # Encoded images are logged by their file's sha256; FP32 tensors by their raw bytes' (as over HTTP).
        logged = call.tensor.images if call.tensor.images is not None else [a.tobytes() for a in answer.inputs]
        ids = await pipeline.log_answer(logged, answer, threshold)
        return tensors.encode_response(
            model_name=answer.model.classifier.metadata.name,
            model_version=answer.model.version,
            request_id=request.id,
            outputs=call.outputs,
            raw=call.raw,
            probabilities=answer.probabilities,
            labels=[label_for(p, threshold, class_names) for p in answer.probabilities],
            ids=ids,
        )

    def _check_key(self, context: Context) -> None:
        expected = self._settings.api_key
        if expected is None:
            return
        sent = next((value for key, value in context.invocation_metadata() or () if key == API_KEY_METADATA), None)
        sent_bytes = sent.encode() if isinstance(sent, str) else sent
        # Constant-time comparison, so the key cannot be guessed byte by byte from timings.
        if sent_bytes is None or not secrets.compare_digest(sent_bytes, expected.get_secret_value().encode()):
            raise UnauthorizedError(f"missing or wrong API key: send it in the {API_KEY_METADATA} metadata")

    def _deadline(self, context: Context) -> tuple[float, bool]:
        """REQUEST_TIMEOUT_S from now, or the client's deadline when that comes first (then True): a call that
        runs past the client's deadline is DEADLINE_EXCEEDED, past the service's own the busy UNAVAILABLE."""
        deadline = self._pipeline.deadline()
        remaining = context.time_remaining()
        if remaining is None:
            return deadline, False
        clients = asyncio.get_running_loop().time() + remaining
        return min(deadline, clients), clients <= deadline

    async def _answer(
        self, method: str, request: Message, context: Context, call: Callable[[Any, Context], Awaitable[T]]
    ) -> T:
        """The call's answer, or its error as the table's code with the message as details; counted and timed."""
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            if isinstance(request, Unreadable):
                raise MalformedRequestError(f"the {method} request is not a valid protobuf message: {request.reason}")
            return await call(request, context)
        except (ServiceError, ImageError) as exc:
            code, retry = grpc_code_for(exc)
            trailing = ((RETRY_AFTER_METADATA, str(self._settings.retry_after_s)),) if retry else ()
            await context.abort(code, str(exc), trailing_metadata=trailing)
            raise  # unreachable: abort raises
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED  # the client went away (or its deadline passed) mid-call
            raise
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # unexpected: logged with its traceback, answered without any detail
            code = grpc.StatusCode.INTERNAL
            log.exception("unhandled error in gRPC %s", method, exc_info=exc)
            await context.abort(code, "internal server error")
            raise  # unreachable: abort raises
        finally:
            self._metrics.grpc_requests.labels(method, code.name).inc()
            self._metrics.grpc_latency.labels(method).observe(time.perf_counter() - start)
