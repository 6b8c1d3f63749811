"""The HTTP edge's reading of image files: multipart fields `file`/`files`, or a raw image body."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from service.core.failures import (
    InvalidRequestError,
    MalformedRequestError,
    PayloadTooLargeError,
    RequestTimeoutError,
    UnsupportedMediaTypeError,
)
from service.core.pipeline import EncodedImage

FILE_FIELDS = ("file", "files")
RAW_MEDIA_TYPES = ("application/octet-stream",)
MAX_FILENAME_CHARS = 255


def media_type_of(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


@asynccontextmanager
async def arriving_by(deadline: float, timeout_s: float, what: str = "the upload") -> AsyncIterator[None]:
    """Reading a request's body must end by the request's deadline; past it, 408 naming REQUEST_TIMEOUT_S."""
    try:
        async with asyncio.timeout_at(deadline):
            yield
    except TimeoutError as exc:
        raise RequestTimeoutError(f"{what} did not arrive within {timeout_s:g} s") from exc


def _too_large(what: str, limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"{what} is larger than the {limit}-byte limit per file")


async def read_uploads(request: Request, max_files: int, max_file_bytes: int) -> list[EncodedImage]:
    media_type = media_type_of(request)
    if media_type == "multipart/form-data":
        return await _read_multipart(request, max_files, max_file_bytes)
    if media_type.startswith("image/") or media_type in RAW_MEDIA_TYPES:
        data = await request.body()
        if len(data) > max_file_bytes:
            raise _too_large("the request body", max_file_bytes)
        return [EncodedImage(None, data)]
    shown = media_type or "no Content-Type"
    raise UnsupportedMediaTypeError(
        f"{shown} is not accepted: send multipart/form-data with a 'file' field, "
        "or the image itself with an image/* Content-Type",
    )


async def _read_multipart(request: Request, max_files: int, max_file_bytes: int) -> list[EncodedImage]:
    # Our own parser call rather than request.form(): its errors come back as 400 only.
    parser = MultiPartParser(request.headers, request.stream(), max_files=max_files, max_fields=100)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        if exc.message.startswith("Too many files"):
            raise InvalidRequestError(f"too many files: at most {max_files} per request") from exc
        raise MalformedRequestError(f"malformed multipart body: {exc.message}") from exc
    try:
        unexpected = sorted(
            {key for key, value in form.multi_items() if isinstance(value, UploadFile)} - set(FILE_FIELDS)
        )
        if unexpected:
            raise InvalidRequestError(
                f"unexpected file field(s) {unexpected}: use 'file' for one image or 'files' for several"
            )
        uploads: list[EncodedImage] = []
        # In the order they were sent: predictions are documented to follow upload order.
        for field, value in form.multi_items():
            if field not in FILE_FIELDS:
                continue
            if not isinstance(value, UploadFile):
                raise InvalidRequestError(f"field '{field}' must be a file upload, not text")
            name = (value.filename or "")[:MAX_FILENAME_CHARS] or None
            if value.size is not None and value.size > max_file_bytes:
                raise _too_large(f"file '{name}'", max_file_bytes)
            uploads.append(EncodedImage(name, await value.read()))
        if not uploads:
            raise InvalidRequestError(
                "no image: send it in a multipart field named 'file' (or several 'files' fields)"
            )
        return uploads
    finally:
        await form.close()
