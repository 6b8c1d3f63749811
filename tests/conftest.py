"""Shared fixtures: a tiny ONNX model with the real signature and a TestClient that runs the lifespan."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.core.config import Settings
from service.edge.app import create_app
from tests.model_factory import build_tiny_onnx, write_tiny_metadata


@pytest.fixture(scope="session", autouse=True)
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The default DATA_DIR (the prediction log) of every service the tests start, in process or as a server
    process, is a temporary folder, never the user's data directory."""
    folder = tmp_path_factory.mktemp("xdg-data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_DATA_HOME", str(folder))
        yield folder / "cell-classifier"


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = build_tiny_onnx(tmp_path_factory.mktemp("tiny-model") / "model.onnx")
    write_tiny_metadata(path)
    return path


@pytest.fixture
def make_client(tiny_model_path: Path) -> Iterator[Callable[..., TestClient]]:
    """make_client(MAX_FILES=2, ...) -> a started TestClient over the tiny model with those settings."""
    opened: list[TestClient] = []

    def make(**overrides: object) -> TestClient:
        # The direct path unless a test asks otherwise: the tiny model's own measurement would pick either.
        defaults = {"model_path": tiny_model_path, "request_path": "direct"}
        settings = Settings(**{**defaults, **{k.lower(): v for k, v in overrides.items()}})
        client = TestClient(create_app(settings))
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in reversed(opened):
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


def image_bytes(image: Image.Image, fmt: str, **save_args: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save_args)
    return buffer.getvalue()


@pytest.fixture
def png_bytes() -> bytes:
    return image_bytes(Image.linear_gradient("L").resize((300, 300)), "PNG")
