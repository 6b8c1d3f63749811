"""The edge's one table of errors -> status codes, for every door, and the HTTP handlers that answer them.

Three protocols share the table: the service's own routes answer `{"detail": message}`, the Open Inference
Protocol's paths under /v2 answer `{"error": message}` (what tritonclient and KServe read), and its gRPC door
(`service.edge.grpc`) answers the row's gRPC status code with the message as its details. Where the HTTP
protocols' statuses differ the row says so. Expected failures become answers a person can act on; unexpected
ones a generic 500 (gRPC: INTERNAL) that leaks nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import grpc
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from service.core.failures import (
    BusyError,
    ForbiddenError,
    InvalidRequestError,
    MalformedRequestError,
    NotFoundError,
    NotReadyError,
    PayloadTooLargeError,
    ReloadRefusedError,
    RequestError,
    RequestTimeoutError,
    ServiceError,
    StoreUnavailableError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
)
from service.core.preprocessing import ImageError, ImageTooLargeError, UnsupportedImageFormatError
from service.edge.headers import NOSNIFF

log = logging.getLogger(__name__)

Protocol = Literal["rest", "v2"]
V2_PREFIX = "/v2"


@dataclass(frozen=True)
class Rule:
    kind: type[Exception]
    status: int
    grpc: grpc.StatusCode  # the gRPC door's code
    v2_status: int | None = None  # the Open Inference Protocol's HTTP status, where it differs


_C = grpc.StatusCode
# Most specific first: the first class the error is an instance of decides. gRPC: a size over a limit is
# RESOURCE_EXHAUSTED, as gRPC itself answers a message over its size limit; every other bad request
# INVALID_ARGUMENT (gRPC has no 415 or 422); busy or not ready UNAVAILABLE, the code its clients retry.
STATUS_FOR: tuple[Rule, ...] = (
    Rule(ImageTooLargeError, 413, _C.RESOURCE_EXHAUSTED),
    Rule(UnsupportedImageFormatError, 415, _C.INVALID_ARGUMENT),
    Rule(ImageError, 400, _C.INVALID_ARGUMENT),
    Rule(PayloadTooLargeError, 413, _C.RESOURCE_EXHAUSTED),
    Rule(UnsupportedMediaTypeError, 415, _C.INVALID_ARGUMENT),
    Rule(MalformedRequestError, 400, _C.INVALID_ARGUMENT),
    # FastAPI's convention for a well-formed request that is not valid; the protocol (and Triton) answer 400.
    Rule(InvalidRequestError, 422, _C.INVALID_ARGUMENT, v2_status=400),
    Rule(RequestValidationError, 422, _C.INVALID_ARGUMENT, v2_status=400),
    Rule(RequestTimeoutError, 408, _C.DEADLINE_EXCEEDED),
    Rule(UnauthorizedError, 401, _C.UNAUTHENTICATED),
    Rule(ForbiddenError, 403, _C.PERMISSION_DENIED),
    Rule(NotFoundError, 404, _C.NOT_FOUND),
    Rule(ReloadRefusedError, 409, _C.FAILED_PRECONDITION),
    Rule(RequestError, 400, _C.INVALID_ARGUMENT),
    Rule(BusyError, 503, _C.UNAVAILABLE),
    Rule(NotReadyError, 503, _C.UNAVAILABLE),
    Rule(StoreUnavailableError, 503, _C.UNAVAILABLE),
)
# Statuses that tell the client to come back: they carry Retry-After (RETRY_AFTER_S; gRPC: trailing metadata).
RETRYABLE = frozenset({503})


def protocol_for(path: str) -> Protocol:
    return "v2" if path == V2_PREFIX or path.startswith(V2_PREFIX + "/") else "rest"


def error_key_for(path: str) -> str:
    """The field an error message goes in at this path: the protocol's `error` under /v2, else `detail`."""
    return "error" if protocol_for(path) == "v2" else "detail"


def status_for(exc: Exception, protocol: Protocol = "rest") -> int:
    for rule in STATUS_FOR:
        if isinstance(exc, rule.kind):
            return rule.v2_status if protocol == "v2" and rule.v2_status is not None else rule.status
    raise LookupError(f"no HTTP status for {type(exc).__name__}")


def grpc_code_for(exc: Exception) -> tuple[grpc.StatusCode, bool]:
    """The gRPC door's code for an error of the table, and whether the client should retry (the retry hint)."""
    for rule in STATUS_FOR:
        if isinstance(exc, rule.kind):
            return rule.grpc, rule.status in RETRYABLE
    raise LookupError(f"no gRPC status for {type(exc).__name__}")


def retry_headers(retry_after_s: int) -> dict[str, str]:
    return {"Retry-After": str(retry_after_s)}


def describe_validation_error(exc: RequestValidationError) -> str:
    """FastAPI's list of problems as one sentence, so every 4xx body carries one message."""
    problems = []
    for error in exc.errors():
        where, *path = error.get("loc", ()) or ("request",)
        name = ".".join(map(str, path)) or str(where)
        problems.append(f"{where} parameter '{name}': {error.get('msg', 'invalid')}")
    return "; ".join(problems) or "the request is invalid"


def error_response(exc: Exception, retry_after_s: int, protocol: Protocol = "rest") -> JSONResponse:
    """The JSON answer to an error of the table, in the protocol's field, with Retry-After when retryable."""
    status = status_for(exc, protocol)
    headers = retry_headers(retry_after_s) if status in RETRYABLE else None
    message = describe_validation_error(exc) if isinstance(exc, RequestValidationError) else str(exc)
    key = "error" if protocol == "v2" else "detail"
    return JSONResponse({key: message}, status_code=status, headers=headers)


async def _tabled(request: Request, exc: Exception) -> JSONResponse:
    return error_response(exc, request.app.state.settings.retry_after_s, protocol_for(request.url.path))


async def _framework(request: Request, exc: Exception) -> Response:
    """The router's own 404 and 405 (no route matched) in the field of the path's protocol. The statuses stay
    HTTP's own: the protocol defines no status for a path it does not have."""
    assert isinstance(exc, StarletteHTTPException)
    if protocol_for(request.url.path) == "rest":
        return await http_exception_handler(request, exc)
    allowed = (exc.headers or {}).get("Allow")
    where = f"this endpoint takes {allowed}" if allowed else "no such endpoint of the Open Inference Protocol here"
    return JSONResponse({"error": f"{exc.detail}: {where} (the list is at /docs)"}, status_code=exc.status_code,
                        headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    # Sent by Starlette outside every middleware, so it carries the common headers itself.
    return JSONResponse({error_key_for(request.url.path): "internal server error"}, status_code=500, headers=NOSNIFF)


async def _client_gone(request: Request, exc: Exception) -> Response:
    # Nobody is left to read an answer; 499 (nginx's "client closed request") keeps it apart in metrics.
    log.debug("client disconnected during %s %s", request.method, request.url.path)
    return Response(status_code=499)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(RequestValidationError, _tabled)
    app.add_exception_handler(ImageError, _tabled)
    app.add_exception_handler(ServiceError, _tabled)
    app.add_exception_handler(StarletteHTTPException, _framework)
    app.add_exception_handler(Exception, _unexpected)
