"""Bad model versions against a real `python -m service` with clients running: every one is refused (409 naming
the reason, one ERROR line, model_reloads_total{outcome="refused"}), no client request fails, the served version
never changes until a good one arrives; the poller outlives them all and the server still stops cleanly."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.model_factory import build_onnx_failing_at_run_time
from tests.reliability.conftest import Server
from tests.reliability.samples import valid_images

pytestmark = pytest.mark.timeout(180)

KEY = "reload-key"
PNG = valid_images()["png-gray"]


def _copy_good(tiny: Path, folder: Path) -> None:
    folder.mkdir(parents=True)
    shutil.copy(tiny, folder / "model.onnx")
    shutil.copy(tiny.with_suffix(".json"), folder / "model.json")


def _fails_at_warm_up(tiny: Path, folder: Path) -> str:
    _copy_good(tiny, folder)
    model = build_onnx_failing_at_run_time(folder / "model.onnx")
    card = json.loads((folder / "model.json").read_text())
    card["sha256"] = hashlib.sha256(model.read_bytes()).hexdigest()
    (folder / "model.json").write_text(json.dumps(card))
    return r"fails when run \(warm-up\): Fail: .*Reshape"


def _truncated(tiny: Path, folder: Path) -> str:
    _copy_good(tiny, folder)
    (folder / "model.onnx").write_bytes(tiny.read_bytes()[:100])
    return r"does not match its metadata"


def _top_level_sha256_wrong(tiny: Path, folder: Path) -> str:
    _copy_good(tiny, folder)
    card = json.loads((folder / "model.json").read_text())
    variant = {"engine": "onnxruntime", "precision": "fp32", "file": "model.onnx", "sha256": card["sha256"],
               "accuracy": 1.0}
    card.update(sha256="0" * 64, variants=[variant])
    (folder / "model.json").write_text(json.dumps(card))
    return r"model file .*/model\.onnx does not match its metadata .*/model\.json \(sha256 differs\)"


def _no_card(tiny: Path, folder: Path) -> str:
    _copy_good(tiny, folder)
    (folder / "model.json").unlink()
    return r"model metadata .*/model\.json does not exist"


BAD_VERSIONS: dict[str, Callable[[Path, Path], str]] = {
    "fails-at-warm-up": _fails_at_warm_up,
    "truncated": _truncated,
    "top-level-sha256-wrong": _top_level_sha256_wrong,
    "no-card": _no_card,
}


class Clients:
    """Threads posting an image to /predict until stopped; every answer's status and version are kept."""

    def __init__(self, base_url: str, count: int = 4) -> None:
        self.answers: list[tuple[int | str, str | None]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(base_url,)) for _ in range(count)]

    def _run(self, base_url: str) -> None:
        with httpx.Client(base_url=base_url, timeout=30, headers={"X-API-Key": KEY}) as client:
            while not self._stop.is_set():
                try:
                    response = client.post("/predict", files={"file": ("a.png", PNG, "image/png")})
                    self.answers.append((response.status_code, response.headers.get("X-Model-Version")))
                except httpx.TransportError as exc:
                    self.answers.append((type(exc).__name__, None))

    def __enter__(self) -> Clients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def versions_since(self, start: int) -> set[str | None]:
        return {version for _, version in self.answers[start:]}

    @property
    def failures(self) -> list[tuple[int | str, str | None]]:
        return [answer for answer in self.answers if answer[0] != 200]


def refused_count(server: Server) -> float:
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    match = re.search(r'^model_reloads_total\{outcome="refused"\} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def error_lines(server: Server) -> list[str]:
    return [line for line in server.log.splitlines() if line.startswith("ERROR")]


def wait_for(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def model_dir(tiny_model_path: Path, tmp_path: Path) -> Path:
    _copy_good(tiny_model_path, tmp_path / "versions" / "1")
    return tmp_path / "versions"


@pytest.fixture
def start_versions_server(
    start_server: Callable[..., Server], model_dir: Path
) -> Callable[..., Server]:
    def start(**settings: object) -> Server:
        # onnxruntime, so the Reshape fails at warm-up; OpenVINO refuses that file when compiling it.
        return start_server(MODEL_DIR=model_dir, API_KEY=KEY, ENGINE="onnxruntime", **settings)

    return start


def test_bad_versions_are_refused_with_409_while_clients_get_only_200s(
    start_versions_server: Callable[..., Server], model_dir: Path, tiny_model_path: Path
) -> None:
    server = start_versions_server()
    reload = f"{server.base_url}/admin/reload"
    with Clients(server.base_url) as clients:
        wait_for(lambda: len(clients.answers) >= 8)
        for refusals, (case, make) in enumerate(BAD_VERSIONS.items(), start=1):
            folder = model_dir / "2"
            message = make(tiny_model_path, folder)
            response = httpx.post(reload, headers={"X-API-Key": KEY}, timeout=60)
            assert response.status_code == 409, (case, response.text)
            detail = response.json()["detail"]
            assert detail.startswith("version 2 refused: "), detail
            assert re.search(message, detail), (case, detail)
            assert detail.endswith("; still serving version 1"), detail
            assert refused_count(server) == refusals
            assert error_lines(server)[-1].endswith(detail), server.log
            shutil.rmtree(folder)
        assert len(error_lines(server)) == len(BAD_VERSIONS), server.log
        # Folders that are not ASCII decimal names: ignored (one warning line each), nothing to reload.
        for name in ("²", "٣", "1" * 19, "2.0", "v2"):
            _copy_good(tiny_model_path, model_dir / name)
        for _ in range(2):
            response = httpx.post(reload, headers={"X-API-Key": KEY}, timeout=60)
            assert response.json() == {"previous": "1", "serving": "1", "swapped": False}, response.text
        warnings = [line for line in server.log.splitlines() if "ignored: a version folder is named" in line]
        assert len(warnings) == 5, server.log
        before_good = len(clients.answers)
        _copy_good(tiny_model_path, model_dir / "3")
        response = httpx.post(reload, headers={"X-API-Key": KEY}, timeout=60)
        assert response.json() == {"previous": "1", "serving": "3", "swapped": True}, response.text
        wait_for(lambda: clients.answers[-1][1] == "3")
    assert clients.versions_since(0) == {"1", "3"}
    assert clients.versions_since(before_good) <= {"1", "3"}
    assert not clients.failures, clients.failures
    assert server.terminate(timeout_s=30) == 0
    assert "Traceback" not in server.log


def test_the_poller_outlives_a_bad_version_logs_it_once_and_serves_the_next_good_one(
    start_versions_server: Callable[..., Server], model_dir: Path, tiny_model_path: Path
) -> None:
    server = start_versions_server(MODEL_POLL_INTERVAL_S=0.1)
    with Clients(server.base_url) as clients:
        wait_for(lambda: len(clients.answers) >= 8)
        _fails_at_warm_up(tiny_model_path, model_dir / "2")
        wait_for(lambda: refused_count(server) == 1)
        time.sleep(1.5)  # about 15 more ticks: the unchanged bad version is neither retried nor logged again
        assert refused_count(server) == 1
        assert len(error_lines(server)) == 1, server.log
        assert "version 2 refused: " in error_lines(server)[0]
        _copy_good(tiny_model_path, model_dir / "²")
        _copy_good(tiny_model_path, model_dir / "3")
        wait_for(lambda: clients.answers[-1][1] == "3")
    assert not clients.failures, clients.failures
    assert clients.versions_since(0) == {"1", "3"}
    assert server.terminate(timeout_s=30) == 0
    log = server.log
    assert "Application shutdown failed" not in log
    assert "stopped after answering every admitted request" in log
    assert "Traceback" not in log
    assert len([line for line in log.splitlines() if "'²' ignored" in line]) == 1, log
