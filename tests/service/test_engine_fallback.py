"""OpenVINO is the default engine and onnxruntime the fallback: under ENGINE=auto a model OpenVINO cannot load
(its package fails to import, or it cannot compile the file) is served by onnxruntime, with a log line that
says why; asked for explicitly (ENGINE=openvino), the failure stays an error."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from service.core.config import SessionSettings
from service.core.engines import openvino_engine
from service.core.engines.base import EngineUnavailableError
from service.core.model import Classifier, ModelLoadError

pytestmark = pytest.mark.skipif(not openvino_engine.installed(), reason="OpenVINO is not installed")


def _refuses(data: bytes, path: Path, precision: str, threads: int) -> openvino_engine.OpenVinoEngine:
    raise EngineUnavailableError(f"model file {path} cannot be compiled by OpenVINO: Unsupported operation")


def test_auto_serves_with_onnxruntime_when_openvino_cannot_compile_the_file(
    tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(openvino_engine, "load", _refuses)
    with caplog.at_level(logging.INFO):
        classifier = Classifier.load(tiny_model_path, SessionSettings(), engine="auto")

    assert classifier.engine.describe()["engine"] == "onnxruntime"
    assert any("OpenVINO" in r.getMessage() and "onnxruntime" in r.getMessage() for r in caplog.records)


def test_auto_serves_with_onnxruntime_when_openvino_fails_to_import(
    tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # None in sys.modules makes `import openvino` raise ImportError (a wheel without its shared libraries).
    monkeypatch.setitem(sys.modules, "openvino", None)
    monkeypatch.setattr(openvino_engine, "installed", lambda: True)
    with caplog.at_level(logging.INFO):
        classifier = Classifier.load(tiny_model_path, SessionSettings(), engine="auto")

    assert classifier.engine.describe()["engine"] == "onnxruntime"
    assert any("onnxruntime" in r.getMessage() for r in caplog.records)


def test_an_explicit_engine_openvino_that_cannot_compile_stays_an_error(
    tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(openvino_engine, "load", _refuses)
    with pytest.raises(ModelLoadError, match=r"cannot be compiled by OpenVINO"):
        Classifier.load(tiny_model_path, SessionSettings(), engine="openvino")
