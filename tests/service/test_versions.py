"""MODEL_DIR versions, hot reload (POST /admin/reload and polling) and the threshold at each level."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.core.batching import MicroBatcher
from service.core.config import Settings
from service.core.model import ModelLoadError
from service.core.versions import ModelRepository
from service.edge.app import create_app
from tests.service.helpers import gray_png, wait_until

KEY = "admin-key"
HEADERS = {"X-API-Key": KEY}


@pytest.fixture
def add_version(tiny_model_path: Path, tmp_path: Path) -> Callable[..., Path]:
    """add_version(n, broken=False) -> MODEL_DIR with version n (the tiny model, or bytes that are not ONNX)."""
    model_dir = tmp_path / "versions"

    def add(version: int, *, broken: bool = False) -> Path:
        folder = model_dir / str(version)
        folder.mkdir(parents=True)
        shutil.copy(tiny_model_path.with_suffix(".json"), folder / "model.json")
        if broken:
            (folder / "model.onnx").write_bytes(b"not an onnx model")
            (folder / "model.json").write_text((folder / "model.json").read_text().replace('"sha256"', '"x"'))
        else:
            shutil.copy(tiny_model_path, folder / "model.onnx")
        return model_dir

    return add


def _start(**settings: object) -> TestClient:
    client = TestClient(create_app(Settings(**settings)))
    client.__enter__()
    return client


def _version(client: TestClient) -> str:
    response = client.post("/predict", files={"file": ("a.png", gray_png(100), "image/png")}, headers=HEADERS)
    assert response.status_code == 200, response.text
    assert response.headers["X-Model-Version"] == response.json()["model"]["version"]
    return response.json()["model"]["version"]


def test_the_highest_version_in_model_dir_is_served(add_version: Callable[..., Path]) -> None:
    add_version(2)
    model_dir = add_version(10)  # numeric order: 10 is newer than 2
    client = _start(model_dir=model_dir, api_key=KEY)
    try:
        assert _version(client) == "10"
        assert client.get("/model", headers=HEADERS).json()["version"] == "10"
        assert client.get("/readyz").headers["X-Model-Version"] == "10"
    finally:
        client.__exit__(None, None, None)


def test_an_empty_model_dir_stops_start_up_with_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"holds no version: put a model at .*/1/model.onnx"):
        _start(model_dir=tmp_path)


def test_reload_under_load_switches_each_client_exactly_once_without_failures(
    add_version: Callable[..., Path],
) -> None:
    model_dir = add_version(1)
    client = _start(model_dir=model_dir, api_key=KEY, max_queue_images=256)
    seen: dict[int, list[str]] = {i: [] for i in range(4)}
    reloaded = threading.Event()
    failures: list[BaseException] = []

    def keep_asking(worker: int) -> None:
        try:
            # Until this client has had several answers after the swap completed.
            while not reloaded.is_set() or seen[worker][-3:] != ["2", "2", "2"]:
                seen[worker].append(_version(client))
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread below
            failures.append(exc)

    try:
        threads = [threading.Thread(target=keep_asking, args=(i,)) for i in seen]
        for thread in threads:
            thread.start()
        wait_until(lambda: all(len(answers) >= 3 for answers in seen.values()))
        add_version(2)
        response = client.post("/admin/reload", headers=HEADERS)
        reloaded.set()
        for thread in threads:
            thread.join(60)
    finally:
        reloaded.set()
        client.__exit__(None, None, None)
    assert not failures, failures
    assert response.json() == {"previous": "1", "serving": "2", "swapped": True}
    for answers in seen.values():
        switch = answers.index("2")
        assert set(answers[:switch]) == {"1"}, answers
        assert set(answers[switch:]) == {"2"}, answers


def test_a_broken_new_version_is_refused_and_the_old_one_keeps_serving(
    add_version: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    model_dir = add_version(1)
    client = _start(model_dir=model_dir, api_key=KEY)
    try:
        add_version(2, broken=True)
        with caplog.at_level(logging.ERROR, logger="service"):
            response = client.post("/admin/reload", headers=HEADERS)
        assert response.status_code == 409
        assert response.json()["detail"].startswith("version 2 refused: model file")
        assert response.json()["detail"].endswith("still serving version 1")
        assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [response.json()["detail"]]
        assert _version(client) == "1"
        assert client.get("/readyz").status_code == 200
    finally:
        client.__exit__(None, None, None)


def test_reload_without_a_newer_version_changes_nothing(add_version: Callable[..., Path]) -> None:
    client = _start(model_dir=add_version(3), api_key=KEY)
    try:
        response = client.post("/admin/reload", headers=HEADERS)
        assert response.json() == {"previous": "3", "serving": "3", "swapped": False}
    finally:
        client.__exit__(None, None, None)


def test_polling_serves_a_new_version_without_a_call(add_version: Callable[..., Path]) -> None:
    client = _start(model_dir=add_version(1), api_key=KEY, model_poll_interval_s=0.05)
    try:
        add_version(2)
        wait_until(lambda: client.get("/model", headers=HEADERS).json()["version"] == "2")
        assert _version(client) == "2"
    finally:
        client.__exit__(None, None, None)


@pytest.mark.parametrize(
    ("api_key", "sent", "status", "message"),
    [
        (None, None, 403, "POST /admin/reload is off: set API_KEY"),
        (KEY, None, 401, "missing or wrong API key"),
        (KEY, "wrong", 401, "missing or wrong API key"),
    ],
    ids=["no-key-configured", "no-key-sent", "wrong-key"],
)
def test_reload_needs_a_configured_and_matching_api_key(
    make_client: Callable[..., TestClient], api_key: str | None, sent: str | None, status: int, message: str
) -> None:
    client = make_client(API_KEY=api_key)
    response = client.post("/admin/reload", headers={"X-API-Key": sent} if sent else {})
    assert response.status_code == status
    assert message in response.json()["detail"]


def test_reload_of_a_single_model_file_is_refused(make_client: Callable[..., TestClient]) -> None:
    response = make_client(API_KEY=KEY).post("/admin/reload", headers=HEADERS)
    assert response.status_code == 409
    assert "needs MODEL_DIR" in response.json()["detail"]


def _label_and_threshold(client: TestClient, query: str = "") -> tuple[str, float]:
    # Gray level 140: the tiny model answers about 0.6.
    response = client.post(f"/predict{query}", files={"file": ("a.png", gray_png(140), "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    return body["predictions"][0]["label"], body["threshold"]


def test_the_threshold_comes_from_the_request_then_the_deployment_then_the_model(
    make_client: Callable[..., TestClient],
) -> None:
    plain = make_client()
    assert _label_and_threshold(plain) == ("defective", 0.5)
    assert _label_and_threshold(plain, "?threshold=0.9") == ("functional", 0.9)
    deployed = make_client(THRESHOLD=0.95)
    assert _label_and_threshold(deployed) == ("functional", 0.95)
    assert _label_and_threshold(deployed, "?threshold=0.05") == ("defective", 0.05)
    card = deployed.get("/model").json()
    assert (card["threshold"], card["effective_threshold"]) == (0.5, 0.95)


@pytest.mark.parametrize("value", ["1.5", "-0.1", "half", "nan"])
def test_an_invalid_request_threshold_is_a_422_with_a_sentence(client: TestClient, value: str) -> None:
    response = client.post(f"/predict?threshold={value}", files={"file": ("a.png", gray_png(140), "image/png")})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("query parameter 'threshold': ")


def test_a_version_taken_again_is_found_in_its_folder_whatever_its_leading_zeros(
    add_version: Callable[..., Path],
) -> None:
    """After a promotion the previous version is loaded again by its number (rollback by evidence): a folder named
    "007" serves as version 7 and must be found again as 7."""
    model_dir = add_version(1)
    (model_dir / "1").rename(model_dir / "007")
    repository = ModelRepository(model_dir)
    latest = repository.latest()
    again = repository.source(latest.version)
    assert (latest.version, latest.path) == ("7", model_dir / "007" / "model.onnx")
    assert (again.version, again.path, again.fingerprint) == (latest.version, latest.path, latest.fingerprint)
    with pytest.raises(ModelLoadError, match=r"version 8 is not in MODEL_DIR"):
        repository.source("8")


@pytest.mark.parametrize("name", ["²", "٣", "1" * 19, "-1", "+2", " 2", "2.0", "v2", ".2"])
def test_a_folder_not_named_in_ascii_digits_is_ignored_with_one_warning(
    add_version: Callable[..., Path], caplog: pytest.LogCaptureFixture, name: str
) -> None:
    model_dir = add_version(1)
    (model_dir / name).mkdir()
    shutil.copy(model_dir / "1" / "model.onnx", model_dir / name / "model.onnx")
    repository = ModelRepository(model_dir)
    with caplog.at_level(logging.WARNING, logger="service"):
        assert [version for version, _ in repository.versions()] == [1]
        assert repository.latest().version == "1"
    assert [r.getMessage() for r in caplog.records] == [
        f"MODEL_DIR entry {name!r} ignored: a version folder is named by a whole number in ASCII digits "
        f"(at most 18), such as {model_dir}/2"
    ]


def test_a_poller_tick_that_raises_is_logged_once_counted_and_polling_goes_on(
    add_version: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    client = _start(model_dir=add_version(1), api_key=KEY, model_poll_interval_s=0.02)
    failures = 0
    real_latest = ModelRepository.latest

    def flaky_latest(self: ModelRepository) -> object:
        nonlocal failures
        if failures < 5:
            failures += 1
            raise RuntimeError("disk on fire")
        return real_latest(self)

    monkeypatch.setattr(ModelRepository, "latest", flaky_latest)
    try:
        with caplog.at_level(logging.ERROR, logger="service"):
            wait_until(lambda: failures == 5)
            add_version(2)
            wait_until(lambda: client.get("/model", headers=HEADERS).json()["version"] == "2")
        metrics = client.get("/metrics").text
    finally:
        client.__exit__(None, None, None)
    assert "model_poll_errors_total 5.0" in metrics
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == ["the version poller's check failed: RuntimeError: disk on fire; it checks again every 0.02 s"]


def test_stop_runs_every_step_when_one_fails(
    add_version: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The batcher's path, whose stop is made to fail (the tiny model's measurement could pick either).
    client = _start(model_dir=add_version(1), api_key=KEY, model_poll_interval_s=0.02, request_path="batched")
    add_version(2)
    wait_until(lambda: client.get("/model", headers=HEADERS).json()["version"] == "2")
    stopped: list[str] = []

    async def failing_stop(self: MicroBatcher) -> None:
        stopped.append("batcher")
        raise RuntimeError("stop failed")

    real_shutdown = ThreadPoolExecutor.shutdown

    def recording_shutdown(self: ThreadPoolExecutor, *args: object, **kwargs: object) -> None:
        if self._thread_name_prefix == "decode":
            stopped.append("decoder")
        real_shutdown(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(MicroBatcher, "stop", failing_stop)
    monkeypatch.setattr(ThreadPoolExecutor, "shutdown", recording_shutdown)
    with caplog.at_level(logging.INFO, logger="service"):
        client.__exit__(None, None, None)
    assert stopped == ["batcher", "decoder"]
    messages = [r.getMessage() for r in caplog.records]
    assert "stopping the predictor failed: RuntimeError: stop failed" in messages
    assert "stopped after answering every admitted request" in messages


def test_a_model_dir_that_vanished_is_a_refusal_logged_once_by_the_poller(
    add_version: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    model_dir = add_version(1)
    client = _start(model_dir=model_dir, api_key=KEY, model_poll_interval_s=0.02)
    try:
        with caplog.at_level(logging.ERROR, logger="service"):
            shutil.rmtree(model_dir)
            wait_until(lambda: 'model_reloads_total{outcome="refused"} 1.0' in client.get("/metrics").text)
            time.sleep(0.3)  # about 15 more ticks, each refused the same way
            response = client.post("/admin/reload", headers=HEADERS)
            metrics = client.get("/metrics").text
        assert response.status_code == 409
        assert response.json()["detail"] == f"MODEL_DIR {model_dir} does not exist; still serving version 1"
        assert 'model_reloads_total{outcome="refused"} 2.0' in metrics  # the poller's one, then this call's
        assert [r.getMessage() for r in caplog.records] == [response.json()["detail"]] * 2
        assert _version(client) == "1"
    finally:
        client.__exit__(None, None, None)
