"""GET / (the try-it page) as served by the app, without a browser; tests/browser drive it in chromium."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient


def test_the_page_and_its_files_are_served_from_the_app(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    # No CDN: every script and stylesheet is a same-origin path.
    assert 'src="/static/page.js"' in page.text
    assert "http" not in page.text.split("<body>")[0]
    for path, media_type in (("/static/page.js", "javascript"), ("/static/page.css", "text/css")):
        response = client.get(path)
        assert response.status_code == 200
        assert media_type in response.headers["content-type"]


def test_the_page_stays_out_of_the_openapi_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths
    assert {"/explain", "/preprocess"} <= set(paths)


@pytest.mark.parametrize("path", ["/", "/static/page.js"])
def test_ui_enabled_false_turns_the_page_off(make_client: Callable[..., TestClient], path: str) -> None:
    client = make_client(UI_ENABLED=False)
    assert client.get(path).status_code == 404
    # The API stays on.
    assert client.get("/model").status_code == 200


def test_unknown_static_files_are_404(client: TestClient) -> None:
    assert client.get("/static/../service/core/config.py").status_code == 404
    assert client.get("/static/missing.js").status_code == 404
