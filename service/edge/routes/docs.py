"""GET /docs: Swagger UI from the installed swagger-ui-bundle-v2 package, so it works with no internet and
under a CSP (FastAPI's own /docs loads it from a CDN: a blank page offline, and an inline script)."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.responses import FileResponse
from swagger_ui_bundle import swagger_ui_path

DOCS_DIR: Final = Path(__file__).resolve().parent.parent / "static" / "docs"
SWAGGER_DIR: Final = Path(swagger_ui_path)
# Only what the page loads; the package's own index.html (with its inline script) is not served.
ASSETS: Final = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"})
# Everything from this origin, no inline script; Swagger UI draws its icons as data: URLs.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)
_headers = {"Content-Security-Policy": CONTENT_SECURITY_POLICY}

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def docs() -> FileResponse:
    """The interactive API documentation."""
    return FileResponse(DOCS_DIR / "index.html", media_type="text/html", headers=_headers)


@router.get("/docs/init.js")
async def docs_init() -> FileResponse:
    return FileResponse(DOCS_DIR / "init.js", media_type="text/javascript", headers=_headers)


@router.get("/docs/assets/{name}")
async def docs_asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise HTTPException(404, "Not Found")
    return FileResponse(SWAGGER_DIR / name, headers=_headers)


def install(app: FastAPI) -> None:
    """Serves /docs itself; the app is built with docs_url=None and redoc_url=None (ReDoc is a CDN too)."""
    app.include_router(router)
