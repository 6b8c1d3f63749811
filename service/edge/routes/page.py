"""GET /: a small page to try the model from a browser (static HTML, CSS and JS from service/edge/static)."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR: Final = Path(__file__).resolve().parent.parent / "static"
# Everything comes from this origin: no CDN, no inline script; images are blob: URLs made by the page.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; img-src 'self' blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)
_headers = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff"}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def page() -> FileResponse:
    """The try-it page."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=_headers)


def install(app: FastAPI) -> None:
    """Serves the page at / and its files under /static (only when UI_ENABLED)."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
