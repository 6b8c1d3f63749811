"""The assembled app: CORS stays closed unless origins are configured."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from tests.service.helpers import gray_png

LAB = "https://lab.example"
PREFLIGHT = {"Origin": LAB, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"}


def test_cors_is_closed_by_default(client: TestClient) -> None:
    response = client.get("/healthz", headers={"Origin": LAB})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    preflight = client.options("/predict", headers=PREFLIGHT)
    assert "access-control-allow-origin" not in preflight.headers


@pytest.fixture
def cors_client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(CORS_ORIGINS=f"{LAB}, https://other.example")


def test_cors_allows_a_configured_origin(cors_client: TestClient) -> None:
    response = cors_client.post(
        "/predict", files={"file": ("cell.png", gray_png(9), "image/png")}, headers={"Origin": LAB}
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == LAB


def test_cors_preflight_allows_the_api_key_header_for_a_configured_origin(cors_client: TestClient) -> None:
    response = cors_client.options("/predict", headers=PREFLIGHT)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == LAB
    assert "x-api-key" in response.headers["access-control-allow-headers"].lower()
    assert "POST" in response.headers["access-control-allow-methods"]


def test_cors_ignores_origins_that_are_not_configured(cors_client: TestClient) -> None:
    response = cors_client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in response.headers
    preflight = cors_client.options("/predict", headers={**PREFLIGHT, "Origin": "https://evil.example"})
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_headers_reach_browsers_on_errors_too(make_client: Callable[..., TestClient]) -> None:
    client = make_client(CORS_ORIGINS=LAB, MAX_BODY_BYTES=100)
    response = client.post("/predict", content=b"\x00" * 101, headers={"Origin": LAB, "Content-Type": "image/png"})
    assert response.status_code == 413
    assert response.headers["access-control-allow-origin"] == LAB
