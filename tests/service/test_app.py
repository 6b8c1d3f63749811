"""The assembled app: CORS stays closed unless origins are configured."""

from __future__ import annotations

import logging
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


@pytest.mark.parametrize(
    ("host", "key", "warnings"),
    [("0.0.0.0", None, 1), ("::", None, 1), ("0.0.0.0", "a-key", 0), ("127.0.0.1", None, 0)],
)
def test_serving_every_interface_without_a_key_logs_one_warning(
    make_client: Callable[..., TestClient], caplog: pytest.LogCaptureFixture, host: str, key: str | None,
    warnings: int,
) -> None:
    with caplog.at_level(logging.INFO, logger="service"):
        make_client(HOST=host, API_KEY=key)
    exposed = [r for r in caplog.records if r.levelno == logging.WARNING and "every interface" in r.getMessage()]
    assert len(exposed) == warnings
    if exposed:
        assert "set API_KEY, or HOST=127.0.0.1" in exposed[0].getMessage()


def test_the_start_up_line_says_which_class_the_probability_is_of(
    make_client: Callable[..., TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="service"):
        make_client()
    assert any("probability = p(defective)" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("key", "required"), [(None, False), ("a-key", True)])
def test_model_says_whether_a_key_is_required(
    make_client: Callable[..., TestClient], key: str | None, required: bool
) -> None:
    assert make_client(API_KEY=key).get("/model").json()["api_key_required"] is required
