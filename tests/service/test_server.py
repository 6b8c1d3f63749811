"""`python -m service` for real: uvicorn in a subprocess on 127.0.0.1, stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import readiness
from tests.service.helpers import expected_probability, gray_png

START_TIMEOUT_S = 90.0  # seconds when idle; a loaded box can take far longer to import onnxruntime
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(tiny_model_path: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    port = free_port()
    env = {
        **os.environ,
        "MODEL_PATH": str(tiny_model_path),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_LEVEL": "info",
        "GRACEFUL_SHUTDOWN_S": "5",
    }
    log_path = tmp_path / "server.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "service"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=Path.cwd()
    )
    try:
        yield process, f"http://127.0.0.1:{port}", log_path
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


def wait_ready(process: subprocess.Popen[bytes], url: str) -> None:
    def exited() -> str | None:
        return None if process.poll() is None else f"the server exited with {process.returncode}"

    why = readiness.wait_ready(url, exited, START_TIMEOUT_S)
    if why is not None:
        pytest.fail(why)


def test_server_answers_a_png_and_exits_cleanly_on_sigterm(
    server: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    process, url, log_path = server
    wait_ready(process, url)
    data = gray_png(180)
    response = httpx.post(f"{url}/predict", files={"file": ("cell.png", data, "image/png")}, timeout=10.0)
    assert response.status_code == 200
    assert response.json()["predictions"][0]["probability"] == pytest.approx(expected_probability(data), abs=1e-6)
    assert "server" not in response.headers
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=STOP_TIMEOUT_S) == 0
    assert "Application shutdown complete" in log_path.read_text()
