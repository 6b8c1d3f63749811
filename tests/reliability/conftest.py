"""Real servers for the reliability tests: `python -m service` over the tiny model, through bench's harness."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bench.servers import REPO_ROOT, Server, service_spec
from service.core.config import Settings
from service.edge.app import create_app

__all__ = ["HOSTILE_LIMITS", "REPO_ROOT", "Server", "spawn_server"]

# Small limits, so the fuzzers reach every limit cheaply.
HOSTILE_LIMITS = {"max_files": 3, "max_file_bytes": 64 * 1024, "max_body_bytes": 256 * 1024}


@pytest.fixture(scope="module")
def hostile_client(tiny_model_path: Path) -> Iterator[TestClient]:
    settings = Settings(model_path=tiny_model_path, **HOSTILE_LIMITS)
    # A 500 must come back as a response we can assert on, not as an exception in the test.
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def spawn_server(model_path: Path, log_path: Path, **settings: object) -> Server:
    """A started process (not yet ready) with these settings (MAX_BODY_BYTES=..., ...); its log at log_path."""
    env = {"LOG_LEVEL": "info", **{key.upper(): str(value) for key, value in settings.items()}}
    spec = service_spec(log_path.stem, model_path, env)
    return Server(spec, log_path.parent, ready_timeout_s=60.0).spawn()


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
        server.kill()
