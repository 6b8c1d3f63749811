"""Optional API key on /predict (header X-API-Key), off unless API_KEY is set."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from service.core.failures import UnauthorizedError

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="needed when API_KEY is set")


async def require_api_key(request: Request, key: Annotated[str | None, Depends(api_key_header)]) -> None:
    """async: no thread-pool hop per request (service.edge.deps)."""
    expected = request.app.state.settings.api_key
    if expected is None:
        return
    # Constant-time comparison, so the key cannot be guessed byte by byte from timings.
    if key is None or not secrets.compare_digest(key.encode(), expected.get_secret_value().encode()):
        raise UnauthorizedError("missing or wrong API key: send it in the X-API-Key header")
