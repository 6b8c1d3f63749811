"""The loop end to end in a real server: verdicts promote a truly better version automatically, then roll it back
automatically when it turns worse, and 8 connections sending images meanwhile get no error."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.servers import Server, service_spec
from tests.service.helpers import gray_png, wait_until
from tests.service.quality.test_shadow import add_flipped_version

KEY = "admin-key"
HEADERS = {"X-API-Key": KEY}
LEVELS = (10, 200, 40, 230)
CLASSES = ("functional", "defective")
CONNECTIONS = 8
# With every discordant pair won, E passes 1/0.05 = 20 at the 13th pair and 2/0.05 = 40 (a rollback) at the 15th
# (service.core.quality.gate); the minimum is below both, so the evidence decides.
PROMOTED_AT, ROLLED_BACK_AT = 13, 15


@pytest.fixture
def versions(tiny_model_path: Path, tmp_path: Path) -> Path:
    versions = tmp_path / "versions"
    (versions / "1").mkdir(parents=True)
    shutil.copy(tiny_model_path, versions / "1" / "model.onnx")
    shutil.copy(tiny_model_path.with_suffix(".json"), versions / "1" / "model.json")
    return versions


@pytest.fixture
def server(versions: Path, tiny_model_path: Path, tmp_path: Path) -> Iterator[Server]:
    env = {"MODEL_DIR": str(versions), "API_KEY": KEY, "DATA_DIR": str(tmp_path / "data"), "ROLLOUT": "shadow",
           "PROMOTE": "auto", "ROLLBACK": "auto", "GATE_MIN_PAIRS": "8", "REQUEST_PATH": "direct",
           "LOG_LEVEL": "info"}
    with Server(service_spec("loop", tiny_model_path, env), tmp_path, ready_timeout_s=90.0) as running:
        # The versions folder is read, not the file: MODEL_DIR's version 1 serves.
        yield running


class Load:
    """CONNECTIONS clients sending one image each, back to back, until stopped; every answer's status and version."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[tuple[int, str | None]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(CONNECTIONS)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        wait_until(lambda: len(self.answers) >= 4 * CONNECTIONS, timeout_s=30)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self, n: int) -> None:
        data = gray_png(LEVELS[n % len(LEVELS)])
        with httpx.Client(base_url=self.url, headers=HEADERS, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    response = client.post("/predict", files={"file": ("cell.png", data, "image/png")})
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                self.answers.append((response.status_code, response.headers.get("X-Model-Version")))


def quality(url: str) -> dict:
    response = httpx.get(f"{url}/quality", headers=HEADERS, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def settle(url: str) -> None:
    """Waits until the shadow and the log's writer have finished what earlier load left them."""
    def figures() -> tuple[int, int, int]:
        report = quality(url)
        return report["shadow"]["scored"], report["shadow"]["skipped"], report["log"]["written"]

    last = figures()
    for _ in range(100):
        time.sleep(0.3)
        now = figures()
        if now == last:
            return
        last = now
    raise AssertionError("the shadow or the log kept working after the load stopped")


def scored_pair(url: str, level: int) -> tuple[str, str]:
    """One image answered by the served version and scored by the shadow one, both rows written."""
    before = quality(url)
    response = httpx.post(f"{url}/predict", files={"file": ("cell.png", gray_png(level), "image/png")},
                          headers=HEADERS, timeout=10)
    assert response.status_code == 200, response.text
    wait_until(lambda: quality(url)["shadow"]["scored"] == before["shadow"]["scored"] + 1, timeout_s=10)
    wait_until(lambda: quality(url)["log"]["written"] == before["log"]["written"] + 2, timeout_s=10)
    prediction = response.json()["predictions"][0]
    return prediction["id"], prediction["label"]


def judge(url: str, pairs: list[tuple[str, str]]) -> None:
    """Verdicts that the served label was wrong (the shadow version, answering the other label, was right)."""
    verdicts = [{"id": id, "label": CLASSES[1 - CLASSES.index(label)]} for id, label in pairs]
    response = httpx.post(f"{url}/feedback", json=verdicts, headers=HEADERS, timeout=10)
    assert response.status_code == 200, response.text


def decisions_counted(url: str) -> dict[tuple[str, str], float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {(s.labels["action"], s.labels["decided_by"]): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == "rollout_decisions_total"}


def swap_under_load(url: str, pairs_needed: int, serving_after: str) -> list[tuple[int, str | None]]:
    """All but the last verdict the gate needs, quietly; the last one with 8 connections sending images."""
    settle(url)
    pairs = [scored_pair(url, LEVELS[n % len(LEVELS)]) for n in range(pairs_needed)]
    judge(url, pairs[:-1])
    assert quality(url)["gate"]["decision"] == "wait"
    with Load(url) as load:
        judge(url, pairs[-1:])
        wait_until(lambda: quality(url)["served_version"] == serving_after, timeout_s=30)
        wait_until(lambda: quality(url)["shadow_version"] is not None, timeout_s=60)  # the previous one, again
        served = len(load.answers)
        wait_until(lambda: len(load.answers) >= served + 4 * CONNECTIONS, timeout_s=30)
    assert load.failures == []
    return load.answers


def test_a_better_version_is_promoted_and_rolled_back_when_it_turns_worse_with_no_error_under_load(
    server: Server, versions: Path, tiny_model_path: Path
) -> None:
    url = server.url
    add_flipped_version(versions, tiny_model_path)
    assert httpx.post(f"{url}/admin/reload", headers=HEADERS, timeout=30).json()["shadow"] == "2"

    # Version 2 is right wherever the two differ: promoted by the gate at the 13th judged pair.
    answers = swap_under_load(url, PROMOTED_AT, serving_after="2")
    assert {status for status, _ in answers} == {200}
    assert {version for _, version in answers} == {"1", "2"}
    report = quality(url)
    assert (report["served_version"], report["shadow_version"]) == ("2", "1")
    promotion = report["decisions"][0]
    assert (promotion["action"], promotion["decided_by"], promotion["previous"], promotion["serving"]) == (
        "promote", "gate", "1", "2")
    assert promotion["figures"]["counts"]["pairs"] == PROMOTED_AT
    assert promotion["figures"]["counts"]["candidate_only"] == PROMOTED_AT
    assert report["gate"]["check"] == "rollback"
    assert report["gate"]["pairs"] == 0  # the evidence for a rollback starts at the promotion

    # Then the world changes: version 1 is right wherever they differ. Rolled back at the 15th judged pair.
    answers = swap_under_load(url, ROLLED_BACK_AT, serving_after="1")
    assert {status for status, _ in answers} == {200}
    assert {version for _, version in answers} == {"1", "2"}
    report = quality(url)
    assert (report["served_version"], report["shadow_version"]) == ("1", "2")
    assert [(d["action"], d["decided_by"]) for d in report["decisions"]] == [("rollback", "gate"), ("promote", "gate")]
    assert report["gate"]["waiting_for"].startswith("version 2 was rolled back")
    assert decisions_counted(url) == {("promote", "gate"): 1.0, ("rollback", "gate"): 1.0}
    assert "rollback: version 1 serves instead of version 2, decided by gate (15 judged pairs" in server.log
