"""The HTTP edge's one table of domain errors -> status codes, and the handlers that answer them.

Expected failures become JSON a person can act on; unexpected ones a generic 500 that leaks nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from service.core.failures import BusyError, NotReadyError, ReloadRefusedError, ServiceError, TooLargeError
from service.core.preprocessing import ImageError, ImageTooLargeError, UnsupportedImageFormatError
from service.edge.headers import NOSNIFF

log = logging.getLogger(__name__)

# Most specific first: the first class the error is an instance of decides.
STATUS_FOR: tuple[tuple[type[Exception], int], ...] = (
    (ImageTooLargeError, 413),
    (UnsupportedImageFormatError, 415),
    (ImageError, 400),
    (TooLargeError, 413),
    (BusyError, 503),
    (NotReadyError, 503),
    (ReloadRefusedError, 409),
)
# Statuses that tell the client to come back: they carry Retry-After (RETRY_AFTER_S).
RETRYABLE = frozenset({503})


def status_for(exc: Exception) -> int:
    for kind, status in STATUS_FOR:
        if isinstance(exc, kind):
            return status
    raise LookupError(f"no HTTP status for {type(exc).__name__}")


def retry_headers(retry_after_s: int) -> dict[str, str]:
    return {"Retry-After": str(retry_after_s)}


def error_response(exc: Exception, retry_after_s: int, key: str = "detail") -> JSONResponse:
    """The JSON answer to a domain error: `{key: message}` (`detail` here, the V2 protocol's `error` under
    /v2), and Retry-After when it is retryable."""
    status = status_for(exc)
    headers = retry_headers(retry_after_s) if status in RETRYABLE else None
    return JSONResponse({key: str(exc)}, status_code=status, headers=headers)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    return error_response(exc, request.app.state.settings.retry_after_s)


def describe_validation_error(exc: RequestValidationError) -> str:
    """FastAPI's list of problems as one sentence, so every 4xx body is `{"detail": "<text>"}`."""
    problems = []
    for error in exc.errors():
        where, *path = error.get("loc", ()) or ("request",)
        name = ".".join(map(str, path)) or str(where)
        problems.append(f"{where} parameter '{name}': {error.get('msg', 'invalid')}")
    return "; ".join(problems) or "the request is invalid"


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": describe_validation_error(exc)}, status_code=422)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    # Sent by Starlette outside every middleware, so it carries the common headers itself.
    return JSONResponse({"detail": "internal server error"}, status_code=500, headers=NOSNIFF)


def _http_error(error_key_for: Callable[[str], str]) -> Callable[[Request, Exception], Awaitable[Response]]:
    """The router's own 404 and 405 (no route matched) in the error field of the path's protocol: the
    Open Inference Protocol's `{"error": ...}` under /v2, FastAPI's `{"detail": ...}` elsewhere. The statuses
    stay HTTP's own: the protocol defines no status for a path it does not have."""

    async def handle(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        key = error_key_for(request.url.path)
        if key == "detail":
            return await http_exception_handler(request, exc)
        allowed = (exc.headers or {}).get("Allow")
        where = f"this endpoint takes {allowed}" if allowed else "no such endpoint of the Open Inference Protocol here"
        message = f"{exc.detail}: {where} (the list is at /docs)"
        return JSONResponse({key: message}, status_code=exc.status_code, headers=exc.headers)

    return handle


async def _client_gone(request: Request, exc: Exception) -> Response:
    # Nobody is left to read an answer; 499 (nginx's "client closed request") keeps it apart in metrics.
    log.debug("client disconnected during %s %s", request.method, request.url.path)
    return Response(status_code=499)


def install_error_handlers(app: FastAPI, error_key_for: Callable[[str], str] = lambda path: "detail") -> None:
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(StarletteHTTPException, _http_error(error_key_for))
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(ImageError, _domain_error)
    app.add_exception_handler(ServiceError, _domain_error)
    app.add_exception_handler(Exception, _unexpected)
