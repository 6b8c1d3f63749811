"""X-Content-Type-Options: nosniff on every answer, whoever wrote it; /docs from this origin; the router's own
404 and 405 under /v2 in the protocol's `{"error": ...}`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.core.config import Settings
from service.edge.app import create_app
from tests.service.helpers import gray_png


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/healthz", 200),
        ("GET", "/readyz", 200),
        ("GET", "/model", 200),
        ("GET", "/metrics", 200),
        ("GET", "/openapi.json", 200),
        ("GET", "/", 200),
        ("GET", "/static/page.js", 200),
        ("GET", "/static/page.css", 200),
        ("GET", "/docs", 200),
        ("GET", "/docs/init.js", 200),
        ("GET", "/docs/assets/swagger-ui-bundle.js", 200),
        ("GET", "/docs/assets/swagger-ui.css", 200),
        ("GET", "/v2", 200),
        ("GET", "/v2/models/tiny-test-model", 200),
        ("POST", "/predict", 415),
        ("POST", "/v2/models/tiny-test-model/infer", 400),
        ("GET", "/nowhere", 404),
        ("GET", "/v2/nowhere", 404),
        ("DELETE", "/predict", 405),
    ],
)
def test_every_answer_says_nosniff(client: TestClient, method: str, path: str, status: int) -> None:
    response = client.request(method, path)
    assert response.status_code == status, response.text
    assert response.headers.get_list("X-Content-Type-Options") == ["nosniff"]


def test_the_body_limits_413_and_an_internal_500_say_nosniff_too(
    tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(Settings(model_path=tiny_model_path, max_body_bytes=1024))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("forced")

    with TestClient(app, raise_server_exceptions=False) as client:
        too_large = client.post("/predict", files={"file": ("a.png", b"\x00" * 4096, "image/png")})
        assert too_large.status_code == 413
        assert too_large.headers["X-Content-Type-Options"] == "nosniff"
        failed = client.get("/boom")
        assert (failed.status_code, failed.json()) == (500, {"detail": "internal server error"})
        assert failed.headers["X-Content-Type-Options"] == "nosniff"


def test_the_page_keeps_its_own_headers_once(client: TestClient) -> None:
    response = client.get("/")
    assert response.headers.get_list("X-Content-Type-Options") == ["nosniff"]
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]


def test_docs_load_swagger_ui_from_this_origin_under_a_csp(client: TestClient) -> None:
    page = client.get("/docs")
    assert "cdn" not in page.text.lower()
    assert "<script>" not in page.text  # no inline script: the CSP allows none
    for src in ("/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css", "/docs/init.js"):
        assert src in page.text
        assert client.get(src).status_code == 200
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self';" in policy
    assert client.get("/docs/assets/index.html").status_code == 404  # the package's own page has an inline script
    assert client.get("/redoc").status_code == 404  # ReDoc would come from a CDN


@pytest.mark.parametrize(
    ("method", "path", "status", "match"),
    [
        ("GET", "/v2/nowhere", 404, "Not Found: no such endpoint of the Open Inference Protocol here"),
        ("POST", "/v2/models/tiny-test-model/metadata", 404, "Not Found"),
        ("GET", "/v2/models/tiny-test-model/infer", 405, "Method Not Allowed: this endpoint takes POST"),
        ("DELETE", "/v2/health/live", 405, "Method Not Allowed: this endpoint takes GET"),
    ],
)
def test_unmatched_v2_paths_answer_the_protocols_error(
    client: TestClient, method: str, path: str, status: int, match: str
) -> None:
    response = client.request(method, path)
    assert response.status_code == status
    assert set(response.json()) == {"error"}
    assert response.json()["error"].startswith(match)


def test_unmatched_paths_elsewhere_keep_fastapis_detail(client: TestClient) -> None:
    assert client.get("/v2nope").json() == {"detail": "Not Found"}
    assert client.get("/nowhere").json() == {"detail": "Not Found"}
    assert client.put("/predict", files={"file": ("a.png", gray_png(1), "image/png")}).json() == {
        "detail": "Method Not Allowed"
    }


def test_cors_preflight_is_unchanged(make_client: Callable[..., TestClient]) -> None:
    client = make_client(CORS_ORIGINS="https://example.org")
    response = client.options(
        "/predict", headers={"Origin": "https://example.org", "Access-Control-Request-Method": "POST"}
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://example.org"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
