"""POST /feedback and GET /quality through the app, with the log in a temporary SQLite file."""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.core.quality.log import DROP_REASONS
from service.core.quality.records import Answerer, ImageFacts, PredictionRecord, new_id
from service.core.quality.store import Store, predictions, sqlite_url
from tests.service.helpers import gray_png, metric, wait_until

KEY = "feedback-key"


def predict(client: TestClient, *levels: int, **kwargs: object) -> list[dict[str, object]]:
    files = [("files", (f"{level}.png", gray_png(level), "image/png")) for level in levels]
    response = client.post("/predict", files=files, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


@pytest.fixture
def client(make_client: Callable[..., TestClient], tmp_path: Path) -> TestClient:
    return make_client(DATA_DIR=tmp_path)


def test_every_prediction_has_its_own_uuid(client: TestClient) -> None:
    ids = [p["id"] for p in predict(client, 10, 10, 200)]
    assert len(set(ids)) == 3
    assert all(len(id) == 36 and id[14] == "4" for id in ids)  # UUID version 4


def test_a_verdict_is_answered_with_what_it_judged(client: TestClient) -> None:
    (prediction,) = predict(client, 200)
    response = client.post("/feedback", json={"id": prediction["id"], "label": "defective"})
    assert response.status_code == 200
    assert response.json() == {"verdicts": [{
        "id": prediction["id"], "version": "1", "predicted": prediction["label"], "label": "defective",
        "correct": prediction["label"] == "defective",
    }]}


def test_a_list_of_verdicts_is_taken_in_order(client: TestClient) -> None:
    answers = predict(client, 10, 200)
    body = [{"id": a["id"], "label": a["label"]} for a in answers]
    response = client.post("/feedback", json=body)
    assert response.status_code == 200
    assert [v["id"] for v in response.json()["verdicts"]] == [a["id"] for a in answers]
    assert all(v["correct"] for v in response.json()["verdicts"])


def test_an_unknown_id_is_404_and_nothing_of_the_list_is_recorded(client: TestClient) -> None:
    (prediction,) = predict(client, 10)
    body = [{"id": prediction["id"], "label": "functional"}, {"id": "00000000-0000-4000-8000-000000000000",
                                                              "label": "functional"}]
    response = client.post("/feedback", json=body)
    assert response.status_code == 404
    assert "no logged prediction with id 00000000-0000-4000-8000-000000000000" in response.json()["detail"]
    assert client.get("/quality").json()["versions"][0]["verdicts"] == 0


@pytest.mark.parametrize("label", ["cat", "Defective", ""])
def test_an_unknown_label_is_422_naming_the_classes(client: TestClient, label: str) -> None:
    (prediction,) = predict(client, 10)
    response = client.post("/feedback", json={"id": prediction["id"], "label": label})
    assert response.status_code == 422
    assert "['functional', 'defective']" in response.json()["detail"]


@pytest.mark.parametrize("body", [[], {"id": "x"}, {"label": "functional"}, "functional"])
def test_a_malformed_verdict_is_422(client: TestClient, body: object) -> None:
    assert client.post("/feedback", json=body).status_code == 422


def test_a_new_verdict_for_the_same_id_replaces_the_old_one(client: TestClient) -> None:
    (prediction,) = predict(client, 200)
    wrong = "functional" if prediction["label"] == "defective" else "defective"
    client.post("/feedback", json={"id": prediction["id"], "label": wrong})
    client.post("/feedback", json={"id": prediction["id"], "label": prediction["label"]})
    (version,) = client.get("/quality").json()["versions"]
    assert (version["verdicts"], version["correct"], version["accuracy"]) == (1, 1, 1.0)
    assert metric(client, "feedback_total", version="1", outcome="wrong") == 1
    assert metric(client, "feedback_total", version="1", outcome="correct") == 1
    assert metric(client, "quality_accuracy", version="1") == 1.0


def test_feedback_and_quality_need_the_api_key_when_one_is_set(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = make_client(DATA_DIR=tmp_path, API_KEY=KEY)
    (prediction,) = predict(client, 10, headers={"X-API-Key": KEY})
    verdict = {"id": prediction["id"], "label": "functional"}
    assert client.post("/feedback", json=verdict).status_code == 401
    assert client.post("/feedback", json=verdict, headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.get("/quality").status_code == 401
    assert client.post("/feedback", json=verdict, headers={"X-API-Key": KEY}).status_code == 200
    assert client.get("/quality", headers={"X-API-Key": KEY}).status_code == 200


def test_with_the_log_off_predictions_keep_ids_and_feedback_is_403(make_client: Callable[..., TestClient]) -> None:
    client = make_client(PREDICTION_LOG=False)
    (prediction,) = predict(client, 10)
    response = client.post("/feedback", json={"id": prediction["id"], "label": "functional"})
    assert response.status_code == 403
    assert "PREDICTION_LOG=true" in response.json()["detail"]


def test_quality_reports_the_confusion_matrix_and_scores_per_version(client: TestClient) -> None:
    answers = predict(client, 10, 10, 200, 200)
    assert {a["label"] for a in answers} == {"functional", "defective"}, "the tiny model's two classes"
    truth = ["functional", "defective", "defective", "defective"]
    client.post("/feedback", json=[{"id": a["id"], "label": t} for a, t in zip(answers, truth, strict=True)])
    report = client.get("/quality").json()
    assert report["served_version"] == "1"
    assert report["shadow_version"] is None
    (version,) = report["versions"]
    predicted = [a["label"] for a in answers]
    expected = {t: {p: 0 for p in ("functional", "defective")} for t in ("functional", "defective")}
    for p, t in zip(predicted, truth, strict=True):
        expected[t][p] += 1
    assert version["confusion"] == expected
    assert version["answers"] == {"served": 4, "shadow": 0}
    assert version["verdicts"] == 4
    assert report["log"]["spool"] == {"rows": 0, "bytes": 0, "since": None}
    assert report["log"]["dropped"] == {"queue_full": 0, "store_error": 0, "spool_full": 0, "spool_error": 0}


def test_the_quality_window_keeps_the_last_verdicts(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    client = make_client(DATA_DIR=tmp_path, QUALITY_WINDOW=2)
    answers = predict(client, 10, 10, 10)
    for answer in answers:
        client.post("/feedback", json={"id": answer["id"], "label": answer["label"]})
    assert client.get("/quality").json()["versions"][0]["verdicts"] == 2


def test_explain_and_v2_answers_carry_ids_that_feedback_takes(client: TestClient) -> None:
    explained = client.post("/explain", files={"file": ("cell.png", gray_png(120), "image/png")})
    png = client.post("/explain?format=png", files={"file": ("cell.png", gray_png(120), "image/png")})
    body = {"inputs": [{"name": "image_bytes", "shape": [2], "datatype": "BYTES",
                        "data": [base64.b64encode(gray_png(level)).decode() for level in (10, 200)]}]}
    inferred = client.post("/v2/models/tiny-test-model/infer", json=body)
    assert inferred.status_code == 200, inferred.text
    ids = [explained.json()["id"], png.headers["X-Prediction-Id"], *inferred.json()["parameters"]["ids"]]
    response = client.post("/feedback", json=[{"id": id, "label": "functional"} for id in ids])
    assert response.status_code == 200, response.text


def test_the_log_keeps_the_image_hash_and_size_and_not_the_image(client: TestClient, tmp_path: Path) -> None:
    data = gray_png(42)
    response = client.post("/predict", files={"file": ("a.png", data, "image/png")})
    client.__exit__(None, None, None)  # a graceful stop writes the queue
    with Store(sqlite_url(tmp_path)).engine.connect() as connection:
        row = connection.execute(select(predictions)).one()
    assert row.id == response.json()["predictions"][0]["id"]
    assert (row.image_sha256, row.image_bytes, row.image) == (hashlib.sha256(data).hexdigest(), len(data), None)
    assert (row.role, row.version, row.label) == ("served", "1", response.json()["predictions"][0]["label"])


def test_every_answered_prediction_is_in_the_log_after_a_graceful_stop(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = make_client(DATA_DIR=tmp_path, PREDICTION_LOG_IMAGES=True)
    ids = [p["id"] for _ in range(40) for p in predict(client, 10, 200)]
    client.__exit__(None, None, None)
    with Store(sqlite_url(tmp_path)).engine.connect() as connection:
        logged = {row.id: row.image for row in connection.execute(select(predictions.c.id, predictions.c.image))}
    assert set(logged) == set(ids)
    assert all(image and image.startswith(b"\x89PNG") for image in logged.values())


def test_with_the_store_down_every_request_is_answered_and_its_rows_wait_in_the_spool(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    # Nothing listens on port 9 of this machine: every connection is refused at once.
    client = make_client(PREDICTION_LOG_URL="postgresql+psycopg://nobody@127.0.0.1:9/none", DATA_DIR=tmp_path)
    for _ in range(10):
        predict(client, 10, 200)
    wait_until(lambda: metric(client, "prediction_log_spool_rows") == 20)
    assert metric(client, "prediction_log_rows_total") == 0
    assert sum(metric(client, "prediction_log_dropped_total", reason=r) for r in DROP_REASONS) == 0
    assert 0 < time.time() - metric(client, "prediction_log_spool_oldest_timestamp_seconds") < 60
    assert client.get("/readyz").status_code == 200
    response = client.get("/quality")
    assert response.status_code == 503
    assert "Retry-After" in response.headers
    assert "20 rows wait in this process's spool since 20" in response.json()["detail"]


def test_with_the_store_down_and_no_spool_each_dropped_row_is_counted(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(PREDICTION_LOG_URL="postgresql+psycopg://nobody@127.0.0.1:9/none",
                         PREDICTION_LOG_SPOOL_BYTES=0)
    for _ in range(10):
        predict(client, 10, 200)
    wait_until(lambda: metric(client, "prediction_log_dropped_total", reason="store_error") == 20)
    assert metric(client, "prediction_log_rows_total") == 0
    assert metric(client, "prediction_log_spool_rows") == 0


def test_a_verdict_waits_for_a_row_another_replica_writes_a_moment_later(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = make_client(DATA_DIR=tmp_path, FEEDBACK_WAIT_S=5)
    (prediction,) = predict(client, 200)
    other = new_id()  # answered by another replica whose writer commits 0.5 s after the verdict arrives
    row = PredictionRecord.of(other, "served", Answerer("1", "onnxruntime", "fp32", ("functional", "defective")),
                              0.9, "defective", 0.5, ImageFacts.of(b"cell"))
    threading.Timer(0.5, lambda: Store(sqlite_url(tmp_path)).write([row])).start()
    started = time.monotonic()
    response = client.post("/feedback", json=[{"id": prediction["id"], "label": "defective"},
                                              {"id": other, "label": "functional"}])
    assert response.status_code == 200, response.text
    assert 0.4 < time.monotonic() - started < 4
    assert response.json()["verdicts"][1] == {"id": other, "version": "1", "predicted": "defective",
                                              "label": "functional", "correct": False}


def test_a_verdict_for_an_unknown_id_waits_feedback_wait_s_then_is_404(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = make_client(DATA_DIR=tmp_path, FEEDBACK_WAIT_S=0.3)
    started = time.monotonic()
    response = client.post("/feedback", json={"id": new_id(), "label": "functional"})
    assert response.status_code == 404
    assert 0.3 <= time.monotonic() - started < 3
    assert "FEEDBACK_WAIT_S=0.3 s" in response.json()["detail"]
