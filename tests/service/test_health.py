"""GET /healthz, /readyz, /model, /metrics and /openapi.json."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.core.config import Settings
from service.edge.app import create_app
from tests.model_factory import CLASS_NAMES
from tests.service.helpers import gray_png, metric


@pytest.fixture
def unstarted_client(tiny_model_path: Path) -> TestClient:
    """A client whose lifespan has not run: the model is not loaded."""
    return TestClient(create_app(Settings(model_path=tiny_model_path)))


def test_healthz_answers_ok_once_started(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthz_answers_ok_before_the_model_is_loaded(unstarted_client: TestClient) -> None:
    assert unstarted_client.get("/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize("path", ["/readyz", "/model"])
def test_readiness_and_model_card_are_503_until_the_model_is_loaded(unstarted_client: TestClient, path: str) -> None:
    response = unstarted_client.get(path)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "not" in response.json()["detail"]


def test_predict_is_503_until_the_model_is_loaded(unstarted_client: TestClient) -> None:
    response = unstarted_client.post("/predict", files={"file": ("cell.png", gray_png(9), "image/png")})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json() == {"detail": "the model is not loaded yet"}


def test_readyz_is_ready_after_startup_and_503_again_after_shutdown(unstarted_client: TestClient) -> None:
    with unstarted_client as client:
        response = client.get("/readyz")
        assert response.status_code == 200
        assert response.json() == {"status": "ready"}
    assert client.get("/readyz").status_code == 503


def test_model_describes_the_served_model(client: TestClient, tiny_model_path: Path) -> None:
    response = client.get("/model")
    assert response.status_code == 200
    card = response.json()
    sha256 = hashlib.sha256(tiny_model_path.read_bytes()).hexdigest()
    assert card["class_names"] == list(CLASS_NAMES)
    assert card["threshold"] == 0.5
    assert card["input"] == {"name": "input", "shape": [None, 100, 100, 1], "dtype": "float32"}
    assert card["sha256"] == sha256
    assert card["id"] == sha256
    assert card["identity"] == {"served_file": "model.onnx", "served_sha256": sha256, "card_sha256": sha256}
    assert card["positive_class"] == CLASS_NAMES[1]
    # Fields the service does not use are passed through from model.json.
    assert card["test_metrics"] == json.loads(tiny_model_path.with_suffix(".json").read_text())["test_metrics"]


def test_metrics_is_prometheus_text(client: TestClient) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert "# TYPE http_requests_total counter" in response.text


def test_metrics_count_requests_by_route_and_status(client: TestClient) -> None:
    for level in (10, 20):
        client.post("/predict", files={"file": ("cell.png", gray_png(level), "image/png")})
    client.post("/predict", content=b"junk", headers={"Content-Type": "image/png"})
    client.get("/healthz")
    client.get("/does/not/exist/12345")
    assert metric(client, "http_requests_total", route="/predict", method="POST", status="200") == 2
    assert metric(client, "http_requests_total", route="/predict", method="POST", status="400") == 1
    assert metric(client, "http_requests_total", route="/healthz", method="GET", status="200") == 1
    # Paths that match no route share one label, so clients cannot grow the series without bound.
    assert metric(client, "http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert metric(client, "http_request_duration_seconds_count", route="/predict") == 3
    assert metric(client, "http_request_duration_seconds_bucket", route="/predict", le="+Inf") == 3
    assert metric(client, "images_rejected_total", reason="UndecodableImageError") == 1


@pytest.mark.parametrize(("path", "batches", "lone_batches"), [("batched", 2, 1), ("direct", 4, 4)])
def test_metrics_count_images_batches_and_model_load(
    make_client: Callable[..., TestClient], path: str, batches: int, lone_batches: int
) -> None:
    """The direct path runs every image on its own: each counts as a batch of one."""
    client = make_client(REQUEST_PATH=path)
    uploads = [("files", (f"{i}.png", gray_png(i * 40), "image/png")) for i in range(3)]
    client.post("/predict", files=uploads)
    client.post("/predict", files={"file": ("one.png", gray_png(99), "image/png")})
    assert metric(client, "images_predicted_total") == 4
    assert metric(client, "inference_batch_size_count") == batches
    assert metric(client, "inference_batch_size_sum") == 4
    assert metric(client, "inference_batch_size_bucket", le="1.0") == lone_batches
    assert metric(client, "model_load_seconds") > 0
    assert metric(client, "model_ready") == 1
    assert metric(client, "inference_queue_images") == 0


def test_openapi_documents_the_predict_request_and_responses(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    operation = schema["paths"]["/predict"]["post"]
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/PredictResponse"}
    predict_response = schema["components"]["schemas"]["PredictResponse"]
    assert set(predict_response["properties"]) == {"model", "threshold", "predictions"}
    assert set(schema["components"]["schemas"]["Prediction"]["properties"]) == {
        "id",
        "filename",
        "probability",
        "label",
        "scores",
    }
    for status in ("400", "401", "413", "415", "422", "503"):
        error = operation["responses"][status]["content"]["application/json"]["schema"]
        assert error == {"$ref": "#/components/schemas/ErrorResponse"}, status
    body = operation["requestBody"]["content"]
    assert set(body["multipart/form-data"]["schema"]["properties"]) == {"file", "files"}
    assert {"image/*", "application/octet-stream"} <= set(body)
    assert any("X-API-Key" in json.dumps(scheme) for scheme in schema["components"]["securitySchemes"].values())
