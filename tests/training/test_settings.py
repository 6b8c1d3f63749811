"""TrainSettings: a run's settings built in code, the CLI's defaults read from them, the steps run without argv."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from training.cli import parse_args
from training.settings import (
    ClusterSettings,
    DataSettings,
    OutputSettings,
    RecipeSettings,
    SelectionSettings,
    SettingsError,
    TrainSettings,
)


def test_the_cli_without_options_parses_to_the_default_settings() -> None:
    parsed = parse_args([])

    assert dataclasses.replace(parsed, command="train") == TrainSettings()
    assert parsed.command == "train"


def test_options_land_in_their_group_with_their_type() -> None:
    parsed = parse_args(["--epochs", "3", "--filters", "8,16", "--threshold", "auto", "--cv", "3", "--ray",
                         "--name", "cells", "--dataset", "folder", "--data-dir", "toy"])  # fmt: skip

    assert parsed.recipe == RecipeSettings(epochs=3, filters=(8, 16))
    assert parsed.output == OutputSettings(threshold="auto", name="cells")
    assert parsed.selection == SelectionSettings(cv=3)
    assert parsed.cluster == ClusterSettings(ray="")
    assert parsed.data == DataSettings(dataset="folder", data_dir=Path("toy"))
    assert parsed.recalibrates_batchnorm  # always with --cv


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"data": DataSettings(dataset="folder")}, "--dataset folder needs --data-dir"),
        ({"recipe": RecipeSettings(epochs=0)}, "--epochs and --batch-size must be positive"),
        ({"selection": SelectionSettings(cv=1)}, "--cv needs at least 2 folds"),
        ({"cluster": ClusterSettings(ray="")}, "--ray runs cross-validation folds: it needs --cv K"),
        ({"recipe": RecipeSettings(epochs=2, warmup_epochs=2)}, "--warmup-epochs must be at least 0 and fewer"),
        ({"output": OutputSettings(threshold=1.0)}, "--threshold must be between 0 and 1, or auto"),
    ],
)
def test_settings_that_cannot_run_together_are_refused_in_code_as_on_the_command_line(
    settings: dict, message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        TrainSettings(**settings)


def test_checkpoints_default_to_a_folder_of_the_output() -> None:
    assert OutputSettings(out=Path("runs/a")).checkpoints == Path("runs/a/checkpoints")
    assert OutputSettings(checkpoint_dir=Path("ckpt")).checkpoints == Path("ckpt")


def test_steps_run_on_settings_built_in_code(toy_folder: Path) -> None:
    from training import pipeline as step

    settings = TrainSettings(
        data=DataSettings(dataset="folder", data_dir=toy_folder, test_split=0.25, validation_split=0.15),
        recipe=RecipeSettings(seed=0, ema=True, filters=(4,)),
    )

    loaded = step.load_data(settings.data, settings.recipe.seed)
    recipe = step.fit_settings(settings)

    assert (len(loaded.parts.train), len(loaded.parts.validation), len(loaded.parts.test)) == (81, 15, 32)
    assert loaded.everything.class_names == tuple(sorted(p.name for p in toy_folder.iterdir()))
    assert (recipe.seed, recipe.keep) == (0, "last")  # the averaged weights, not a best checkpoint
    assert step.base_metadata(settings, loaded, 0.5, "fixed by --threshold")["dataset"]["split"] == {
        "train": 81, "validation": 15, "test": 32, "test_fraction": 0.25, "validation_fraction": 0.15,
        "seed": 0, "stratified": True,
    }  # fmt: skip


def test_the_cards_export_record_carries_the_exports_constants() -> None:
    from training import pipeline as step
    from training.export import EXPORT_TOLERANCE, OPSET

    assert step.export_record(3e-6) == {"tool": "tf2onnx.convert.from_function", "opset": OPSET,
                                        "max_abs_difference_vs_keras": 3e-6, "tolerance": EXPORT_TOLERANCE}
