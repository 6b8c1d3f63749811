"""Real servers for the reliability tests: `python -m service` in a subprocess on a free 127.0.0.1 port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import readiness

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(model_path: Path, port: int, **overrides: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("API_KEY", "CORS_", "MAX_", "REQUEST_"))}
    env.update(MODEL_PATH=str(model_path), HOST="127.0.0.1", PORT=str(port), PYTHONUNBUFFERED="1")
    env.update({key.upper(): str(value) for key, value in overrides.items()})
    return env


@dataclass
class Server:
    """One `python -m service` process; its stdout and stderr go to log_path."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        def exited() -> str | None:
            return None if self.process.poll() is None else f"the server exited with {self.process.returncode}"

        why = readiness.wait_ready(self.base_url, exited, timeout_s)
        if why is not None:
            raise RuntimeError(f"{why}:\n{self.log}")

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, then the exit status (SIGKILL and a failure if it does not stop in time)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise
        return self.process.returncode


def spawn_server(model_path: Path, log_path: Path, **settings: object) -> Server:
    port = free_port()
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "service"],
        cwd=REPO_ROOT,
        env=server_env(model_path, port, **settings),
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    log_file.close()
    return Server(process, port, log_path)


@pytest.fixture
def start_server(tiny_model_path: Path, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """start_server(MAX_BODY_BYTES=..., ...) -> a ready server over the tiny model; stopped after the test."""
    started: list[Server] = []

    def start(*, model_path: Path | None = None, wait: bool = True, **settings: object) -> Server:
        server = spawn_server(model_path or tiny_model_path, tmp_path / f"server-{len(started)}.log", **settings)
        started.append(server)
        if wait:
            server.wait_ready()
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()
