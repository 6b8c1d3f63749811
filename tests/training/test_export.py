"""Export: the ONNX graph reproduces the Keras model, and an export that does not is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from tests.model_factory import build_tiny_onnx
from tests.training.toy import Fitted, make_tiny_model

if TYPE_CHECKING:
    from training.data import Split

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(fitted_tiny: Fitted, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.export import export_onnx

    path = tmp_path_factory.mktemp("export") / "model.onnx"
    export_onnx(fitted_tiny.model, path)
    return path


def test_export_matches_keras_on_held_out_images(exported: Path, fitted_tiny: Fitted, toy_split: Split) -> None:
    from training.export import EXPORT_TOLERANCE, onnx_predict, verify_export

    difference = verify_export(fitted_tiny.model, exported, toy_split.test.x)

    assert EXPORT_TOLERANCE == 1e-4
    assert 0 <= difference < 1e-4
    expected = fitted_tiny.model.predict(toy_split.test.x, verbose=0)
    np.testing.assert_allclose(onnx_predict(exported, toy_split.test.x), expected, atol=1e-4)


def test_export_takes_raw_pixels_under_the_name_input_with_a_dynamic_batch(exported: Path) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])

    (model_input,) = session.get_inputs()
    (output,) = session.get_outputs()
    assert model_input.name == "input"
    assert model_input.type == "tensor(float)"
    assert not isinstance(model_input.shape[0], int)
    assert model_input.shape[1:] == [100, 100, 1]
    assert output.shape[1:] == [1]
    for batch in (1, 3):
        (probability,) = session.run(None, {"input": np.full((batch, 100, 100, 1), 255.0, np.float32)})
        assert probability.shape == (batch, 1)
        assert ((probability >= 0) & (probability <= 1)).all()


def test_verify_export_refuses_an_onnx_file_from_another_model(
    fitted_tiny: Fitted, toy_split: Split, tmp_path: Path
) -> None:
    from training.export import ExportError, export_onnx, verify_export

    path = tmp_path / "model.onnx"
    export_onnx(make_tiny_model(seed=123), path)

    with pytest.raises(ExportError, match=r"outputs differ by .* \(tolerance 1e-04\); the export is not faithful"):
        verify_export(fitted_tiny.model, path, toy_split.test.x[:8])


def test_verify_export_refuses_an_onnx_file_with_another_output_shape(fitted_tiny: Fitted, tmp_path: Path) -> None:
    from training.export import ExportError, verify_export

    path = build_tiny_onnx(tmp_path / "model.onnx", output_width=2)

    with pytest.raises(ExportError, match=r"ONNX output shape \(4, 2\) differs from Keras \(4, 1\)"):
        verify_export(fitted_tiny.model, path, np.zeros((4, 100, 100, 1), np.float32))


def test_write_metadata_refuses_a_card_the_service_would_not_load(tmp_path: Path) -> None:
    from training.export import ExportError, write_metadata

    model = build_tiny_onnx(tmp_path / "model.onnx")
    refused = r"would not load this card: model metadata .*model.json is invalid: class_names: Field required"
    with pytest.raises(ExportError, match=refused):
        write_metadata(model, {"name": "tiny", "threshold": 0.5})
    assert not (tmp_path / "model.json").exists()


def test_write_metadata_puts_the_file_name_and_sha256_beside_the_model(tmp_path: Path) -> None:
    import hashlib

    from training.export import write_metadata

    model = build_tiny_onnx(tmp_path / "model.onnx")

    card = {"name": "tiny", "class_names": ["a", "b"], "threshold": 0.5, "input": {}, "output": {}}
    written = write_metadata(model, card)

    assert written == tmp_path / "model.json"
    assert json.loads(written.read_text()) == {
        **card,
        "onnx_file": "model.onnx",
        "sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
    }
