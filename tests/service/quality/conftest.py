"""Fixtures of the live-quality tests: a real PostgreSQL per module, a MODEL_DIR holding version 1."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.postgres import Postgres, unavailable


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """initdb and pg_ctl in a temporary folder; the tests that use it skip, saying why, without the binaries."""
    why = unavailable()
    if why is not None:
        pytest.skip(why)
    with Postgres() as server:
        yield server


@pytest.fixture
def model_dir(tiny_model_path: Path, tmp_path: Path) -> Path:
    """MODEL_DIR with the tiny model as version 1."""
    folder = tmp_path / "versions" / "1"
    folder.mkdir(parents=True)
    shutil.copy(tiny_model_path, folder / "model.onnx")
    shutil.copy(tiny_model_path.with_suffix(".json"), folder / "model.json")
    return folder.parent
