"""`python -m service` for real: uvicorn in a subprocess on 127.0.0.1, stopped with SIGTERM; and the one
start-up path (settings read once, the model loaded once, nothing at import)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

import service.entrypoints.server as entry
from bench.servers import REPO_ROOT, Server, free_port, service_spec
from service.core.model import Classifier
from tests.service.helpers import expected_probability, gray_png

STOP_TIMEOUT_S = 10.0


@pytest.fixture
def server(tiny_model_path: Path, tmp_path: Path) -> Iterator[Server]:
    spec = service_spec("server", tiny_model_path, {"LOG_LEVEL": "info", "GRACEFUL_SHUTDOWN_S": "5"})
    # Generous: a loaded box can take far longer than the usual seconds to import onnxruntime.
    with Server(spec, tmp_path, ready_timeout_s=90.0) as running:
        yield running


def test_server_answers_a_png_and_exits_cleanly_on_sigterm(server: Server) -> None:
    data = gray_png(180)
    response = httpx.post(f"{server.url}/predict", files={"file": ("cell.png", data, "image/png")}, timeout=10.0)
    assert response.status_code == 200
    assert response.json()["predictions"][0]["probability"] == pytest.approx(expected_probability(data), abs=1e-6)
    assert "server" not in response.headers
    assert server.terminate(timeout_s=STOP_TIMEOUT_S) == 0
    assert "Application shutdown complete" in server.log


def test_granian_serves_the_same_app_and_drains_on_sigterm(tiny_model_path: Path, tmp_path: Path) -> None:
    spec = service_spec("granian", tiny_model_path, {"LOG_LEVEL": "info", "HTTP_SERVER": "granian"})
    data = gray_png(180)
    with Server(spec, tmp_path, ready_timeout_s=90.0) as running:
        response = httpx.post(f"{running.url}/predict", files={"file": ("cell.png", data, "image/png")}, timeout=10.0)
        assert response.status_code == 200
        assert response.json()["predictions"][0]["probability"] == pytest.approx(expected_probability(data), abs=1e-6)
        assert response.headers["x-content-type-options"] == "nosniff"
        assert running.terminate(timeout_s=STOP_TIMEOUT_S) == 0
    assert "(granian)" in running.log
    assert "stopped after answering every admitted request" in running.log
    assert "Traceback" not in running.log


def test_starting_the_service_loads_and_warms_the_model_exactly_once(
    tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[Path] = []
    warm_ups: list[tuple[int, ...]] = []
    real_load = Classifier.load.__func__  # type: ignore[attr-defined]
    real_warm_up = Classifier.warm_up

    def counting_load(cls: type[Classifier], model_path: Path, *args: object, **kwargs: object) -> Classifier:
        loads.append(model_path)
        return real_load(cls, model_path, *args, **kwargs)

    def counting_warm_up(self: Classifier, batch_sizes: tuple[int, ...]) -> float:
        warm_ups.append(batch_sizes)
        return real_warm_up(self, batch_sizes)

    def serve_once(app: object, settings: object, sock: socket.socket, grpc_door: object) -> None:
        # Stands in for uvicorn: runs the lifespan and one request, as uvicorn would on the bound socket.
        sock.close()
        with TestClient(app) as client:  # type: ignore[arg-type]
            assert client.get("/readyz").status_code == 200

    monkeypatch.setattr(Classifier, "load", classmethod(counting_load))
    monkeypatch.setattr(Classifier, "warm_up", counting_warm_up)
    monkeypatch.setattr(entry, "serve", serve_once)
    monkeypatch.setenv("MODEL_PATH", str(tiny_model_path))
    monkeypatch.setenv("HOST", "127.0.0.1")
    monkeypatch.setenv("PORT", str(free_port()))
    monkeypatch.setenv("GRPC_PORT", str(free_port()))
    entry.main()
    assert loads == [tiny_model_path]
    assert len(warm_ups) == 1


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False,
        env={"PATH": "/usr/bin:/bin", **env},
    )


def test_importing_the_app_reads_no_settings_and_loads_no_model() -> None:
    # Settings that would fail validation: an import that read them would raise.
    result = _run_python(
        "import service.edge.app, service.entrypoints.server", PORT="not-a-port", MODEL_PATH="/nonexistent.onnx"
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "module",
    ["service.core.pipeline", "service.core.batching", "service.core.preprocessing", "service.core.model",
     "service.core.metrics"],
)
def test_the_request_pipeline_imports_no_web_framework(module: str) -> None:
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette')))"
    result = _run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_http_server_granian_without_its_extra_is_refused_before_the_model_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTP_SERVER", "granian")
    monkeypatch.setattr(entry.importlib.util, "find_spec", lambda name: None)
    loaded: list[object] = []
    monkeypatch.setattr(entry, "load_pipeline", loaded.append)
    with pytest.raises(SystemExit) as exit_info:
        entry.main()
    assert "pip install 'cell-classifier[granian]'" in str(exit_info.value.code)  # sys.exit prints it, exit 1
    assert not loaded
