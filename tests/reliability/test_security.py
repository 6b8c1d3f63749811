"""Safe by default: limits on, CORS closed, optional API key, and 500s that leak nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.core import lanes as lanes_module
from service.core.config import Settings
from service.core.decode_memory import decode_limits
from service.core.memory import available_memory
from service.edge.app import create_app
from service.edge.deps import get_pipeline
from service.edge.routes import predict as predict_route
from tests.reliability.samples import valid_images

PNG = valid_images()["png-gray"]
GENERIC_500 = {"detail": "internal server error"}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting comes from the environment the tests happen to run in."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("clean_env")
def test_upload_limits_are_on_by_default() -> None:
    settings = Settings()
    assert 0 < settings.max_file_bytes <= settings.max_body_bytes <= 256 * 1024 * 1024
    assert 1 <= settings.max_files <= 64
    # MAX_PIXELS and the decode memory budget default to auto: they follow the container's memory.
    limits = decode_limits(settings.decode_memory_budget_bytes, settings.max_pixels, available_memory())
    assert 0 < limits.max_pixels <= 100_000_000
    assert limits.decode_memory_budget_bytes > 0
    assert 0 < settings.request_timeout_s <= 120
    assert 0 < settings.max_queue_images <= 1024
    assert 0 < settings.graceful_shutdown_s <= 60


@pytest.mark.usefixtures("clean_env")
def test_cors_and_the_api_key_are_off_by_default() -> None:
    settings = Settings()
    assert settings.cors_origins == []
    assert settings.api_key is None


@pytest.mark.usefixtures("clean_env")
def test_an_empty_api_key_means_no_key_rather_than_an_empty_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEY", "")
    assert Settings().api_key is None


def _predict(client: TestClient, **headers: str) -> int:
    return client.post("/predict", files={"file": ("a.png", PNG, "image/png")}, headers=headers).status_code


def test_predict_needs_the_api_key_when_one_is_set(make_client: Callable[..., TestClient]) -> None:
    client = make_client(API_KEY="s3cret-key")
    assert _predict(client) == 401
    assert _predict(client, **{"X-API-Key": "wrong"}) == 401
    assert _predict(client, **{"X-API-Key": "s3cret-key "}) == 401
    assert _predict(client, **{"X-API-Key": "s3cret-key"}) == 200


def test_a_refused_key_is_not_echoed_and_the_key_never_appears_in_answers(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(API_KEY="s3cret-key")
    response = client.post("/predict", files={"file": ("a.png", PNG, "image/png")}, headers={"X-API-Key": "guess"})
    assert response.status_code == 401
    assert "guess" not in response.text
    for path in ("/model", "/openapi.json", "/metrics"):
        assert "s3cret-key" not in client.get(path).text


def test_health_checks_stay_open_when_an_api_key_is_set(make_client: Callable[..., TestClient]) -> None:
    client = make_client(API_KEY="s3cret-key")
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


@pytest.mark.usefixtures("clean_env")
def test_cors_is_closed_by_default(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    preflight = client.options(
        "/predict", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers
    simple = client.get("/model", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in simple.headers


def test_cors_allows_only_the_configured_origins(make_client: Callable[..., TestClient]) -> None:
    client = make_client(CORS_ORIGINS="https://a.example, https://b.example")
    allowed = client.options(
        "/predict", headers={"Origin": "https://b.example", "Access-Control-Request-Method": "POST"}
    )
    assert allowed.headers["access-control-allow-origin"] == "https://b.example"
    refused = client.options(
        "/predict", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in refused.headers


@pytest.fixture
def unguarded(tiny_model_path: Path) -> Iterator[tuple[FastAPI, TestClient]]:
    """A started app whose unexpected errors come back as responses instead of raising in the test."""
    app = create_app(Settings(model_path=tiny_model_path))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield app, client


def _assert_leaks_nothing(response: object, *secrets: str) -> None:
    assert response.status_code == 500  # type: ignore[attr-defined]
    assert response.json() == GENERIC_500  # type: ignore[attr-defined]
    for secret in (*secrets, "Traceback", "/work", ".py"):
        assert secret not in response.text  # type: ignore[attr-defined]


def _broken() -> None:
    raise RuntimeError("cannot open /srv/secret/weights.bin")


def test_an_unexpected_error_in_a_dependency_is_a_generic_500(
    unguarded: tuple[FastAPI, TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    app, client = unguarded
    app.dependency_overrides[get_pipeline] = _broken
    response = client.get("/model")
    _assert_leaks_nothing(response, "/srv/secret", "RuntimeError")
    # The details go to the log for the operator instead.
    assert "cannot open /srv/secret/weights.bin" in caplog.text


def test_an_unexpected_error_in_the_hot_routes_own_checks_is_a_generic_500(
    unguarded: tuple[FastAPI, TestClient], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, client = unguarded
    monkeypatch.setattr(predict_route, "serving", lambda request: _broken())
    response = client.post("/predict", files={"file": ("a.png", PNG, "image/png")})
    _assert_leaks_nothing(response, "/srv/secret", "RuntimeError")
    # The details go to the log for the operator instead.
    assert "cannot open /srv/secret/weights.bin" in caplog.text


def test_an_unexpected_error_while_decoding_is_a_generic_500(
    unguarded: tuple[FastAPI, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, client = unguarded

    def broken(image: object) -> None:
        raise KeyError("/home/deploy/.cache/pillow-plugin")

    monkeypatch.setattr(lanes_module, "preprocess_image", broken)
    response = client.post("/predict", files={"file": ("a.png", PNG, "image/png")})
    _assert_leaks_nothing(response, "/home/deploy", "KeyError")


def test_an_unexpected_error_during_inference_is_a_generic_500(
    unguarded: tuple[FastAPI, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, client = unguarded

    def broken(batch: object) -> None:
        raise MemoryError("onnxruntime arena at /opt/ort exhausted")

    # The batcher holds the classifier's predict from start-up; replace it there.
    pipeline = client.app_state["pipeline"]
    monkeypatch.setattr(pipeline.predictor, "_predict", broken)
    response = client.post("/predict", files={"file": ("a.png", PNG, "image/png")})
    _assert_leaks_nothing(response, "/opt/ort", "MemoryError")
    # One failed batch does not break the service.
    monkeypatch.undo()
    assert _predict(client) == 200
