"""Expected failures become JSON a person can act on; unexpected ones a generic 500 that leaks nothing."""

from __future__ import annotations

import logging

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from service.preprocessing import (
    ImageError,
    ImageTooLargeError,
    UnsupportedImageFormatError,
)

log = logging.getLogger(__name__)


def http_error_for_image(exc: ImageError, where: str) -> HTTPException:
    if isinstance(exc, ImageTooLargeError):
        status = 413
    elif isinstance(exc, UnsupportedImageFormatError):
        status = 415
    else:
        status = 400
    return HTTPException(status, f"{where}: {exc}")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal server error"}, status_code=500)


async def _client_gone(request: Request, exc: Exception) -> Response:
    # Nobody is left to read an answer; 499 (nginx's "client closed request") keeps it apart in metrics.
    log.debug("client disconnected during %s %s", request.method, request.url.path)
    return Response(status_code=499)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected)
