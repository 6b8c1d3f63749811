"""Cross-validation: out-of-fold predictions cover every image once, choices come from them, and a
resumed run skips finished folds."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from tests.training.toy import make_tiny_model

if TYPE_CHECKING:
    from training.data import Split

pytestmark = pytest.mark.slow

FOLDS = 3
EPOCHS = 2


def settings(**changes: object):  # -> FitSettings, imported lazily
    from training.fit import FitSettings

    return FitSettings(**{"epochs": EPOCHS, "batch_size": 16, "seed": 0, "augment": False, **changes})


def test_out_of_fold_predictions_cover_every_image_exactly_once(toy_split: Split, tmp_path: Path) -> None:
    from training.crossval import fold_paths, run_folds, summarize
    from training.folds import stratified_folds

    data = toy_split.train
    folds = stratified_folds(data, FOLDS, seed=0)

    numbers = run_folds(data, folds, settings(), tmp_path, lambda: make_tiny_model(seed=0))
    selection = summarize(data, folds, tmp_path, numbers)

    assert numbers == [1, 2, 3]
    for fold in folds:
        predictions = np.load(fold_paths(tmp_path, fold.number).predictions)
        assert predictions.shape == (EPOCHS, len(fold.validation))
        assert ((predictions >= 0) & (predictions <= 1)).all()
        assert np.load(fold_paths(tmp_path, fold.number).flips).shape == (len(fold.validation),)
    summary = selection.summary
    assert summary["covers_every_non_test_image"] is True
    assert summary["images_out_of_fold"] == len(data)
    assert 1 <= selection.epochs == summary["chosen_epochs"] <= EPOCHS
    assert summary["log_loss_by_epoch"][selection.epochs - 1] == min(summary["log_loss_by_epoch"])
    assert 0 < selection.threshold < 1
    assert len(summary["per_fold"]["accuracy"]["per_fold"]) == FOLDS
    assert summary["flip_averaged_last_epoch"]["epoch"] == EPOCHS
    assert summary["raw_weights_without_ema"] is None  # no EMA kept: the raw weights are the only ones
    assert {"accuracy", "roc_auc", "log_loss"} <= set(summary["recalibrated_batchnorm_last_epoch"])
    assert np.load(fold_paths(tmp_path, 1).recalibrated).shape == (2, len(folds[0].validation))


def test_resume_skips_finished_folds_and_runs_the_rest(toy_split: Split, tmp_path: Path) -> None:
    from training.crossval import fold_paths, run_folds, summarize
    from training.folds import stratified_folds

    data = toy_split.train
    folds = stratified_folds(data, FOLDS, seed=0)
    assert run_folds(data, folds, settings(), tmp_path, lambda: make_tiny_model(seed=0), only=1) == [1]
    first = fold_paths(tmp_path, 1)
    finished = (first.predictions.read_bytes(), first.checkpoints.history.read_text())
    assert not fold_paths(tmp_path, 2).predictions.exists()
    partial = summarize(data, folds, tmp_path, [1])
    assert partial.summary["covers_every_non_test_image"] is False

    # A new process resumes: fold 1 is not fitted again, folds 2 and 3 are.
    numbers = run_folds(data, folds, settings(resume=True), tmp_path, lambda: make_tiny_model(seed=1))

    assert numbers == [1, 2, 3]
    assert (first.predictions.read_bytes(), first.checkpoints.history.read_text()) == finished
    assert all(fold_paths(tmp_path, n).done.exists() for n in (1, 2, 3))
    assert summarize(data, folds, tmp_path, numbers).summary["covers_every_non_test_image"] is True


def test_resume_refuses_a_folder_made_with_other_folds(toy_split: Split, tmp_path: Path) -> None:
    from training.crossval import run_folds
    from training.data import DataError
    from training.folds import stratified_folds

    data = toy_split.train
    run_folds(data, stratified_folds(data, FOLDS, seed=0), settings(epochs=1), tmp_path,
              lambda: make_tiny_model(seed=0), only=1)  # fmt: skip

    with pytest.raises(DataError, match=r"folds.json holds other folds .* use another --checkpoint-dir"):
        run_folds(data, stratified_folds(data, FOLDS, seed=5), settings(resume=True), tmp_path,
                  lambda: make_tiny_model(seed=0))  # fmt: skip
