"""training.variants on a folder-trained model: every variant measured on the rebuilt held-out set, recorded
in the card, and served by PRECISION=auto."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from service.core.config import SessionSettings
from service.core.engines import installed_engines
from service.core.engines.capabilities import from_flags
from service.core.model import Classifier
from service.core.model_card import read_model_card
from tests.model_factory import build_tiny_onnx, tiny_probability, with_gain, write_tiny_metadata
from training import variants
from training.data import load_folder, split
from training.evaluate import binary_metrics


@pytest.fixture
def folder_model(tmp_path: Path, toy_folder: Path) -> Path:
    """A 'model' of the toy folder (dark is its positive class, so darker scores higher), with an INT8 file
    that computes with a slightly different gain."""
    model = with_gain(build_tiny_onnx(tmp_path / "tiny.onnx"), -8.0, tmp_path / "model.onnx")
    with_gain(model, -7.0, tmp_path / "model.int8.onnx")
    write_tiny_metadata(model, class_names=["bright", "dark"], dataset={
        "name": "toy", "split": {"test_fraction": 0.25, "validation_fraction": 0.15, "seed": 0},
    })
    return model


def test_variants_are_measured_on_the_held_out_set_and_recorded(folder_model: Path, toy_folder: Path) -> None:
    before = json.loads(folder_model.with_suffix(".json").read_text())
    code = variants.main(["--model", str(folder_model), "--data-dir", str(toy_folder), "--no-quantize",
                          "--speed-seconds", "0.05"])
    assert code == 0
    after = json.loads(folder_model.with_suffix(".json").read_text())
    assert {k: v for k, v in after.items() if k not in ("variants", "variants_measured_on")} == before

    test = split(load_folder(toy_folder), 0.25, 0.15, seed=0).test
    fp32, int8 = tiny_probability(test.x, -8.0), tiny_probability(test.x, -7.0)
    recorded = {(v["engine"], v["precision"]): v for v in after["variants"]}
    expected = {("onnxruntime", "fp32"), ("onnxruntime", "int8")}
    if "openvino" in installed_engines():
        expected |= {("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8")}
    assert set(recorded) == expected
    for (_, precision), variant in recorded.items():
        reference = int8 if precision == "int8" else fp32
        assert variant["images"] == len(test) == 32
        assert variant["file"] == ("model.int8.onnx" if precision == "int8" else "model.onnx")
        assert variant["accuracy"] == binary_metrics(test.y, reference, 0.5)["accuracy"]
        assert variant["images_per_s"] > 0
        # bf16 keeps about 3 significant digits; the others compute what the graph says.
        assert variant["max_probability_difference"] == pytest.approx(
            np.max(np.abs(reference - fp32)), abs=2e-2 if precision == "bf16" else 1e-5
        )
    assert recorded[("onnxruntime", "int8")]["max_probability_difference"] > 1e-3

    served = Classifier.load(folder_model, SessionSettings(), engine="onnxruntime",
                             cpu=from_flags({"avx512_vnni"}))
    assert (served.engine.precision, served.model_id) == ("int8", recorded[("onnxruntime", "int8")]["sha256"])
    assert read_model_card(folder_model.with_suffix(".json")).variants is not None


def test_variants_refuse_a_folder_model_without_its_folder(
    folder_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert variants.main(["--model", str(folder_model), "--no-quantize"]) == 2
    assert capsys.readouterr().err == "variants: the model was trained on 'toy': pass --data-dir with its folder\n"
