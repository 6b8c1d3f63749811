"""Domain errors of the request pipeline: what went wrong, in words a caller can act on.

The pipeline raises these and knows no status codes; `service.edge.errors` maps each to HTTP at the edge.
Image errors (bad, unsupported, too large) live beside the preprocessing that raises them.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of the pipeline's own failures; the message is safe to show a user."""


class RequestError(ServiceError):
    """The request itself is wrong: sent again unchanged, it fails again."""


class InvalidRequestError(RequestError):
    """Well-formed, but not what this door takes (a missing field, a parameter out of range, too many files)."""


class MalformedRequestError(RequestError):
    """Cannot be parsed at all (a broken multipart body, a tensor the protocol does not allow)."""


class PayloadTooLargeError(RequestError):
    """A body or file over its byte limit."""


class UnsupportedMediaTypeError(RequestError):
    """A Content-Type or Content-Encoding this door does not read."""


class RequestTimeoutError(RequestError):
    """The body did not arrive before the request's deadline."""


class UnauthorizedError(RequestError):
    """API_KEY is set and the request's X-API-Key is missing or wrong."""


class ForbiddenError(RequestError):
    """The door is off in this deployment."""


class NotFoundError(RequestError):
    """No such model, version or record."""


class BusyError(ServiceError):
    """The service cannot take this work now (queue full, deadline passed); the caller may retry."""


class OverloadedError(BusyError):
    """More work is in flight than admission allows (images queued, decode memory), or a stage is stopping."""


class NotReadyError(ServiceError):
    """The model is not loaded and warmed yet, or the service is shutting down."""


class StoreUnavailableError(ServiceError):
    """The prediction log's database did not answer a query (a verdict, the quality report); retry later."""


class ReloadRefusedError(ServiceError):
    """A newer model version failed its checks (or there is nothing to reload); the old one keeps serving."""


MAX_REASON_CHARS = 500


def one_line(exc: BaseException) -> str:
    """An unexpected exception as one log-safe line for a message: its type, then its text with newlines
    folded, at most MAX_REASON_CHARS (onnxruntime's messages run to a source path and both shapes)."""
    text = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."
