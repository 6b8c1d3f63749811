"""Optional API key on /predict (header X-API-Key), off unless API_KEY is set."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from service.core.failures import UnauthorizedError

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="needed when API_KEY is set")
# What a route that checks the key itself (check_api_key) states in its OpenAPI operation, as the dependency does.
API_KEY_SECURITY: dict[str, Any] = {"security": [{api_key_header.scheme_name: []}]}


def check_api_key(request: Request) -> None:
    """401 unless API_KEY is unset or the request's X-API-Key header is it."""
    expected = request.app.state.settings.api_key
    if expected is None:
        return
    key = request.headers.get(api_key_header.model.name)
    # Constant-time comparison, so the key cannot be guessed byte by byte from timings.
    if key is None or not secrets.compare_digest(key.encode(), expected.get_secret_value().encode()):
        raise UnauthorizedError("missing or wrong API key: send it in the X-API-Key header")


async def require_api_key(request: Request, key: Annotated[str | None, Depends(api_key_header)]) -> None:
    """As a dependency (the routes off the hot path). async: no thread-pool hop per request (service.edge.deps)."""
    check_api_key(request)
