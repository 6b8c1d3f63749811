"""A prepared file of toy images, as training.accelerator.prepare writes ELPV's: the non-test part, with folds."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.toy import write_toy_folder

FOLDS = 2


@pytest.fixture(scope="session")
def toy_non_test(tmp_path_factory: pytest.TempPathFactory):  # -> training.data.Split
    from training.data import load_folder, split

    folder = write_toy_folder(tmp_path_factory.mktemp("accelerator-toy"), per_class=60, seed=1)
    return split(load_folder(folder), test_fraction=0.25, validation_fraction=0.0, seed=0)


@pytest.fixture(scope="session")
def prepared_toy(toy_non_test, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """90 toy images (the split's non-test part) in two folds: 45 to fit on, one batch of 32."""
    from training.accelerator.arrays import write_arrays
    from training.folds import stratified_folds

    path = tmp_path_factory.mktemp("prepared") / "toy.npz"
    folds = stratified_folds(toy_non_test.train, FOLDS, seed=0)
    write_arrays(path, toy_non_test.train, folds, {"dataset": "folder", "test_fraction": 0.25, "seed": 0})
    return path
