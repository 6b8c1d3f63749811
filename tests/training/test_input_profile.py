"""python -m training.input_profile: the training split's profile written into a model card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.core.model_card import read_model_card
from tests.model_factory import build_tiny_onnx, write_tiny_metadata
from training.data import load_folder, split
from training.input_profile import main

SPLIT = {"test_fraction": 0.25, "validation_fraction": 0.15, "seed": 0}


def test_the_profile_covers_the_training_split_and_keeps_the_rest_of_the_card(
    toy_folder: Path, tmp_path: Path
) -> None:
    model = build_tiny_onnx(tmp_path / "model.onnx")
    card_path = write_tiny_metadata(model, dataset={"name": "folder", "split": SPLIT}, notes="kept")
    before = json.loads(card_path.read_text())
    assert main(["--model", str(model), "--data-dir", str(toy_folder)]) == 0
    after = json.loads(card_path.read_text())
    assert {key: after[key] for key in before} == before
    train = split(load_folder(toy_folder), **SPLIT).train
    profile = read_model_card(card_path).input_statistics
    assert profile is not None
    assert profile.images == len(train)
    # Toy images are bright (150-220) or dark (30-100): nothing in the middle bin 112-128.
    assert profile.mean_gray.fractions[7] == 0.0


def test_a_card_without_a_split_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = build_tiny_onnx(tmp_path / "model.onnx")
    write_tiny_metadata(model)
    assert main(["--model", str(model)]) == 2
    assert "model.json: the model card records no data split" in capsys.readouterr().err
