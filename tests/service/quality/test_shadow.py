"""Shadow rollout: a new version scored beside the served one, never changing an answer, then promoted."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.core.config import Settings
from service.core.quality.records import Answerer, ImageFacts, PredictionRecord
from service.core.quality.shadow import FAILED, SCORED, SKIPPED, ShadowModel, ShadowScorer
from service.edge.app import create_app
from tests.model_factory import with_gain, write_tiny_metadata
from tests.service.helpers import gray_png, metric, wait_until

KEY = "admin-key"
HEADERS = {"X-API-Key": KEY}
LEVELS = (10, 40, 200, 230)  # far from the midpoint: the flipped model labels each the other way
ANSWERER = Answerer("2", "onnxruntime", "fp32", ("functional", "defective"))


def add_flipped_version(model_dir: Path, tiny_model_path: Path) -> None:
    """Version 2 answers sigmoid(-8 (mean - 0.5)): the opposite label of version 1 for every image here."""
    folder = model_dir / "2"
    folder.mkdir()
    write_tiny_metadata(with_gain(tiny_model_path, -8.0, folder / "model.onnx"))


@pytest.fixture
def shadow_client(model_dir: Path, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(model_dir=model_dir, api_key=KEY, data_dir=tmp_path / "data", rollout="shadow")
    with TestClient(create_app(settings)) as client:
        yield client


def answers(client: TestClient) -> list[dict[str, object]]:
    response = client.post(
        "/predict", files=[("files", (f"{v}.png", gray_png(v), "image/png")) for v in LEVELS], headers=HEADERS
    )
    assert response.status_code == 200, response.text
    assert response.headers["X-Model-Version"] == response.json()["model"]["version"]
    return response.json()["predictions"]


def without_ids(predictions: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{k: v for k, v in p.items() if k != "id"} for p in predictions]


def test_a_shadow_version_never_changes_an_answer_is_logged_beside_it_and_is_promoted(
    shadow_client: TestClient, model_dir: Path, tiny_model_path: Path
) -> None:
    client = shadow_client
    before = answers(client)
    add_flipped_version(model_dir, tiny_model_path)
    reloaded = client.post("/admin/reload", headers=HEADERS)
    assert reloaded.json() == {"previous": "1", "serving": "1", "swapped": False, "shadow": "2"}
    assert metric(client, "model_version_shadow", version="2") == 1

    during = answers(client)
    assert without_ids(during) == without_ids(before)
    wait_until(lambda: metric(client, "shadow_images_total", outcome="scored") == len(LEVELS))
    wait_until(lambda: metric(client, "prediction_log_rows_total") == 3 * len(LEVELS))  # served twice, shadow once

    verdicts = [{"id": p["id"], "label": p["label"]} for p in during]  # version 1 was right every time
    assert client.post("/feedback", json=verdicts, headers=HEADERS).status_code == 200
    report = client.get("/quality", headers=HEADERS).json()
    assert (report["served_version"], report["shadow_version"]) == ("1", "2")
    served, shadow = report["versions"]
    assert (served["version"], served["role"], served["accuracy"]) == ("1", "served", 1.0)
    assert (shadow["version"], shadow["role"], shadow["accuracy"]) == ("2", "shadow", 0.0)
    assert shadow["answers"] == {"served": 0, "shadow": len(LEVELS)}
    assert shadow["agreement"] == {"compared": len(LEVELS), "agreed": 0, "rate": 0.0}
    assert report["shadow"]["scored"] == len(LEVELS)

    promoted = client.post("/admin/promote", headers=HEADERS)
    assert promoted.json() == {"previous": "1", "serving": "2", "swapped": True, "shadow": "1"}
    after = answers(client)
    assert [p["label"] for p in after] != [p["label"] for p in before]
    # The previous version is scored in shadow from then on, so a promotion can be undone by evidence.
    assert client.get("/quality", headers=HEADERS).json()["shadow_version"] == "1"
    again = client.post("/admin/promote", headers=HEADERS)
    assert again.json() == {"previous": "2", "serving": "1", "swapped": True, "shadow": "2"}
    decisions = client.get("/quality", headers=HEADERS).json()["decisions"]
    assert [(d["action"], d["previous"], d["serving"], d["decided_by"]) for d in decisions] == [
        ("rollback", "2", "1", "operator"), ("promote", "1", "2", "operator")
    ]


def test_promote_needs_the_admin_key(shadow_client: TestClient) -> None:
    assert shadow_client.post("/admin/promote").status_code == 401
    response = shadow_client.post("/admin/promote", headers=HEADERS)
    assert response.status_code == 409
    assert "no version is scored in shadow" in response.json()["detail"]


def test_with_rollout_replace_a_new_version_is_served_at_once(model_dir: Path, tiny_model_path: Path,
                                                             tmp_path: Path) -> None:
    settings = Settings(model_dir=model_dir, api_key=KEY, data_dir=tmp_path)
    with TestClient(create_app(settings)) as client:
        add_flipped_version(model_dir, tiny_model_path)
        assert client.post("/admin/reload", headers=HEADERS).json() == {
            "previous": "1", "serving": "2", "swapped": True
        }


class Recorder:
    def __init__(self) -> None:
        self.records: list[PredictionRecord] = []
        self.counts: dict[str, int] = {}

    def record(self, record: PredictionRecord) -> None:
        self.records.append(record)

    def count(self, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1


def image() -> tuple[ImageFacts, np.ndarray]:
    return ImageFacts.of(b"bytes"), np.zeros((100, 100, 1), np.float32)


def test_a_full_shadow_queue_skips_and_counts_without_waiting() -> None:
    recorder = Recorder()
    held = threading.Event()
    model = ShadowModel(ANSWERER, lambda x: (held.wait(10), np.full(len(x), 0.9))[1], threshold=0.5)
    scorer = ShadowScorer(sample=1.0, max_queue=2, on_record=recorder.record, on_count=recorder.count, quiet_s=0)
    scorer.follow(model)
    for i in range(5):  # not started: nothing takes from the queue
        scorer.offer(str(i), *image())
    assert recorder.counts == {SKIPPED: 3}
    scorer.start()
    held.set()
    wait_until(lambda: recorder.counts.get(SCORED) == 2)
    scorer.stop()
    assert recorder.counts == {SKIPPED: 3, SCORED: 2}
    assert [(r.id, r.role, r.version, r.label) for r in recorder.records] == [
        ("0", "shadow", "2", "defective"), ("1", "shadow", "2", "defective")
    ]


def test_a_shadow_that_fails_is_counted_and_scores_nothing(caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()

    def broken(x: np.ndarray) -> np.ndarray:
        raise RuntimeError("the shadow engine broke")

    scorer = ShadowScorer(sample=1.0, max_queue=8, on_record=recorder.record, on_count=recorder.count, quiet_s=0)
    scorer.follow(ShadowModel(ANSWERER, broken, threshold=0.5))
    scorer.start()
    for i in range(3):
        scorer.offer(str(i), *image())
    wait_until(lambda: recorder.counts.get(FAILED) == 3)
    scorer.stop()
    assert recorder.counts == {FAILED: 3}
    assert recorder.records == []
    assert sum("the shadow engine broke" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize(("sample", "offered"), [(0.0, 0), (0.5, 2), (1.0, 4)])
def test_the_shadow_sample_decides_the_share_offered(sample: float, offered: int) -> None:
    draws = iter([0.1, 0.9, 0.3, 0.7])
    recorder = Recorder()
    scorer = ShadowScorer(sample=sample, max_queue=8, on_record=recorder.record, on_count=recorder.count,
                          draw=lambda: next(draws), quiet_s=0)
    scorer.follow(ShadowModel(ANSWERER, lambda x: np.full(len(x), 0.1), threshold=0.5))
    scorer.start()
    for i in range(4):
        scorer.offer(str(i), *image())
    wait_until(lambda: len(recorder.records) == offered)
    scorer.stop()
    assert len(recorder.records) == offered


def test_without_a_shadow_version_nothing_is_offered(make_client: Callable[..., TestClient]) -> None:
    client = make_client(ROLLOUT="shadow")
    client.post("/predict", files={"file": ("a.png", gray_png(10), "image/png")})
    assert metric(client, "shadow_images_total", outcome="scored") == 0


def test_without_spare_capacity_images_are_skipped_not_scored() -> None:
    recorder = Recorder()
    busy = [True]
    scorer = ShadowScorer(sample=1.0, max_queue=8, on_record=recorder.record, on_count=recorder.count)
    scorer.follow(ShadowModel(ANSWERER, lambda x: np.full(len(x), 0.1), threshold=0.5), spare=lambda: not busy[0])
    scorer.offer("busy", *image())  # refused at the door
    busy[0] = False
    scorer.offer("queued", *image())
    busy[0] = True  # serving got busy before the thread took it
    scorer.start()
    scorer.stop()
    assert recorder.counts == {SKIPPED: 2}
    assert recorder.records == []


def test_the_shadow_waits_for_a_quiet_moment_and_skips_when_none_comes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("service.core.quality.shadow.MAX_WAIT_S", 0.3)
    recorder = Recorder()
    scorer = ShadowScorer(sample=1.0, max_queue=8, on_record=recorder.record, on_count=recorder.count, quiet_s=0.1)
    scorer.follow(ShadowModel(ANSWERER, lambda x: np.full(len(x), 0.1), threshold=0.5))
    scorer.start()
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:  # a steady stream of served images, one every 20 ms
        scorer.offer("busy", *image())
        time.sleep(0.02)
    assert recorder.records == []
    assert recorder.counts.get(SKIPPED, 0) >= 1
    wait_until(lambda: len(recorder.records) >= 1)  # then nothing: the images still queued get their moment
    scorer.stop()
