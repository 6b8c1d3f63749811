"""Start-up refuses a model it cannot serve, with a message that names the file and the reason."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.core.config import Settings
from service.core.model import Classifier, ModelLoadError
from service.edge.app import create_app
from tests.model_factory import build_tiny_onnx, write_tiny_metadata


def start(model_path: Path) -> None:
    with TestClient(create_app(Settings(model_path=model_path))):
        pass


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    return tmp_path / "model.onnx"


def test_startup_fails_when_the_model_file_is_missing(model_path: Path) -> None:
    write_tiny_metadata(build_tiny_onnx(model_path))
    model_path.unlink()
    with pytest.raises(
        ModelLoadError, match=f"^model file {re.escape(str(model_path))} does not exist: set MODEL_PATH to a model.onnx"
    ):
        start(model_path)


def test_startup_fails_when_nothing_is_at_model_path(model_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=f"{re.escape(str(model_path.with_suffix('')))}.* does not exist"):
        start(model_path)


def test_startup_fails_when_the_model_is_not_onnx(model_path: Path) -> None:
    model_path.write_bytes(np.random.default_rng(0).bytes(4096))
    write_tiny_metadata(model_path)  # its sha256 matches, so the bytes themselves are refused
    with pytest.raises(ModelLoadError, match=f"^model file {re.escape(str(model_path))} is not a loadable ONNX model"):
        start(model_path)


@pytest.mark.parametrize(
    ("shape", "width", "message"),
    [
        (("N", 64, 64, 1), 1, r"takes float32 \[\?, 64, 64, 1\]; the service needs float32 \(N, 100, 100, 1"),
        (("N", 100, 100, 3), 1, r"takes float32 \[\?, 100, 100, 3\]; the service needs"),
        (("N", 100, 100, 1), 2, r"returns float32 \[\?, 2\]; expected float32 \(N, 1\)"),
    ],
    ids=["64x64-input", "rgb-input", "two-outputs-wide"],
)
def test_startup_fails_when_the_model_signature_is_wrong(
    model_path: Path, shape: tuple[object, ...], width: int, message: str
) -> None:
    write_tiny_metadata(build_tiny_onnx(model_path, input_shape=shape, output_width=width))
    with pytest.raises(ModelLoadError, match=f"^model {re.escape(str(model_path))} {message}"):
        start(model_path)


def test_startup_fails_when_the_metadata_is_missing(model_path: Path) -> None:
    build_tiny_onnx(model_path)
    metadata = re.escape(str(model_path.with_suffix(".json")))
    with pytest.raises(ModelLoadError, match=f"^model metadata {metadata} does not exist"):
        start(model_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "is not readable JSON"),
        (json.dumps({"input": {}, "output": {}}), "is invalid: class_names: Field required"),
        (
            json.dumps({"class_names": ["a", "b", "c"], "input": {}, "output": {}}),
            "is invalid: class_names: Tuple should have",
        ),
        (
            json.dumps({"class_names": ["a", "b"], "threshold": "x", "input": {}, "output": {}}),
            "is invalid: threshold: Input should",
        ),
    ],
    ids=["not-json", "no-class-names", "three-classes", "bad-threshold"],
)
def test_startup_fails_when_the_metadata_is_unusable(model_path: Path, text: str, message: str) -> None:
    build_tiny_onnx(model_path)
    model_path.with_suffix(".json").write_text(text)
    with pytest.raises(ModelLoadError, match=f"^model metadata .*model.json {message}"):
        start(model_path)


def test_startup_fails_when_the_metadata_declares_another_input(model_path: Path) -> None:
    write_tiny_metadata(build_tiny_onnx(model_path), input={"name": "input", "shape": [None, 64, 64, 1]})
    with pytest.raises(ModelLoadError, match=r"declares input .*64, 64.*, not \(N, 100, 100, 1\)"):
        start(model_path)


def test_startup_fails_when_the_sha256_does_not_match(model_path: Path) -> None:
    write_tiny_metadata(build_tiny_onnx(model_path), sha256="0" * 64)
    with pytest.raises(ModelLoadError, match=r"does not match its metadata .*model.json \(sha256 differs\)"):
        start(model_path)


def test_startup_fails_when_warm_up_returns_non_finite_output(
    model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tiny_metadata(build_tiny_onnx(model_path))
    monkeypatch.setattr(Classifier, "predict", lambda self, batch: np.full(len(batch), np.nan, np.float32))
    with pytest.raises(ModelLoadError, match="warm-up returned malformed or non-finite output"):
        start(model_path)


def test_startup_failure_is_logged(model_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="service"), pytest.raises(ModelLoadError):
        start(model_path)
    assert any(record.getMessage().startswith("cannot start: model file") for record in caplog.records)


def test_startup_accepts_metadata_without_a_sha256(model_path: Path) -> None:
    build_tiny_onnx(model_path)
    write_tiny_metadata(model_path, sha256=None)
    with TestClient(create_app(Settings(model_path=model_path))) as client:
        assert client.get("/readyz").status_code == 200
        assert client.get("/model").json()["sha256"] is None


def test_a_card_names_its_positive_class_and_an_older_card_without_it_still_loads(model_path: Path) -> None:
    write_tiny_metadata(build_tiny_onnx(model_path))  # no positive_class: a card written before the field
    assert Classifier.load(model_path, Settings().session).describe()["positive_class"] == "defective"
    write_tiny_metadata(model_path, positive_class="defective")
    assert Classifier.load(model_path, Settings().session).metadata.positive_class == "defective"


def test_startup_fails_when_the_positive_class_is_not_the_second_class_name(model_path: Path) -> None:
    write_tiny_metadata(build_tiny_onnx(model_path), positive_class="functional")
    with pytest.raises(ModelLoadError, match="positive_class 'functional' must be the second of class_names"):
        start(model_path)


def _variant(file: str, sha256: str, precision: str = "fp32") -> dict[str, object]:
    return {"engine": "onnxruntime", "precision": precision, "file": file, "sha256": sha256, "accuracy": 1.0}


@pytest.mark.parametrize(
    ("top_level_right", "fp32_right", "int8_right", "wrong_file"),
    [
        pytest.param(False, True, True, "model.onnx", id="top-level"),
        pytest.param(True, False, True, "model.onnx", id="served-variant"),
        pytest.param(True, True, False, "model.int8.onnx", id="variant-not-served"),
    ],
)
def test_every_sha256_the_card_records_is_checked_against_its_file(
    model_path: Path, top_level_right: bool, fp32_right: bool, int8_right: bool, wrong_file: str
) -> None:
    build_tiny_onnx(model_path)
    int8 = build_tiny_onnx(model_path.with_name("model.int8.onnx"))
    right, right_int8 = (hashlib.sha256(p.read_bytes()).hexdigest() for p in (model_path, int8))
    write_tiny_metadata(
        model_path,
        sha256=right if top_level_right else "0" * 64,
        variants=[
            _variant("model.onnx", right if fp32_right else "1" * 64),
            _variant("model.int8.onnx", right_int8 if int8_right else "2" * 64, "int8"),
        ],
    )
    with pytest.raises(ModelLoadError, match=rf"model file \S+/{re.escape(wrong_file)} does not match its metadata"):
        Classifier.load(model_path, Settings(model_path=model_path).session, engine="onnxruntime")


def test_a_card_whose_hashes_all_match_loads(model_path: Path) -> None:
    build_tiny_onnx(model_path)
    right = hashlib.sha256(model_path.read_bytes()).hexdigest()
    # An absent variant file is the selection's business (passed over), not a contradiction.
    write_tiny_metadata(
        model_path, sha256=right.upper(), variants=[_variant("model.onnx", right), _variant("gone.onnx", "3" * 64)]
    )
    assert Classifier.load(model_path, Settings(model_path=model_path).session, engine="onnxruntime").model_id == right


def test_the_served_file_is_opened_once_while_the_service_starts_and_answers(
    model_path: Path, png_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The card records the file's sha256, so the hash check reads it too: the bytes it hashes must be the
    # bytes the engine loads, not a second read of a file that may have changed meanwhile.
    write_tiny_metadata(build_tiny_onnx(model_path))
    opened: list[Path] = []
    real_open = io.open

    def counting_open(file: object, *args: object, **kwargs: object) -> object:
        if isinstance(file, (str, Path)) and Path(file).resolve() == model_path.resolve():
            opened.append(Path(file))
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(io, "open", counting_open)
    with TestClient(create_app(Settings(model_path=model_path))) as client:
        assert client.post("/predict", files={"file": ("x.png", png_bytes, "image/png")}).status_code == 200
    assert len(opened) == 1
