"""Test-time flips folded into the exported graph: same signature, the mean of the four flipped answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.training.toy import Fitted

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def averaged_onnx(fitted_tiny: Fitted, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.export import export_onnx
    from training.flips import with_flip_averaging

    path = tmp_path_factory.mktemp("flips") / "model.tta.onnx"
    export_onnx(with_flip_averaging(fitted_tiny.model), path)
    return path


def images(count: int = 6) -> np.ndarray:
    """Random pixels, so no flip of an image equals another: the test sees every flip's effect."""
    return np.random.default_rng(3).integers(0, 256, (count, 100, 100, 1)).astype(np.float32)


def test_flip_averaged_export_equals_the_mean_of_the_four_flipped_predictions(
    averaged_onnx: Path, fitted_tiny: Fitted
) -> None:
    from training.export import onnx_predict

    x = images()
    flipped = [x, x[:, :, ::-1], x[:, ::-1, :], x[:, ::-1, ::-1]]
    expected = np.mean([fitted_tiny.model.predict(v, verbose=0) for v in flipped], axis=0)

    got = onnx_predict(averaged_onnx, x)

    np.testing.assert_allclose(got, expected, atol=1e-5)
    single = fitted_tiny.model.predict(x, verbose=0)
    assert np.abs(single - expected).max() > 1e-5, "the flips changed nothing: the test would prove nothing"


def test_flip_averaged_export_keeps_the_served_signature(averaged_onnx: Path) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(averaged_onnx), providers=["CPUExecutionProvider"])

    (model_input,) = session.get_inputs()
    (output,) = session.get_outputs()
    assert (model_input.name, model_input.type, model_input.shape[1:]) == ("input", "tensor(float)", [100, 100, 1])
    assert output.shape[1:] == [1]
    assert session.run(None, {"input": images(3)})[0].shape == (3, 1)


def test_flip_averaged_predict_is_what_the_graph_computes(averaged_onnx: Path, fitted_tiny: Fitted) -> None:
    from training.export import onnx_predict
    from training.flips import flip_averaged_predict

    x = images(4)

    np.testing.assert_allclose(flip_averaged_predict(fitted_tiny.model, x), onnx_predict(averaged_onnx, x), atol=1e-5)
