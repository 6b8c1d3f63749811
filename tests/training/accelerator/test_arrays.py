"""The prepared file: whole gray levels survive as uint8, every image has its fold, a wrong file is named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.accelerator.arrays import ArraysError, as_uint8, read_arrays


def test_prepared_file_holds_the_images_labels_and_each_images_fold(prepared_toy: Path, toy_non_test) -> None:
    data = read_arrays(prepared_toy)
    images = toy_non_test.train

    assert data.x.dtype == np.uint8
    assert data.x.shape == (len(images), 100, 100, 1)
    np.testing.assert_array_equal(data.x, images.x)  # lossless: the preprocessing gives whole gray levels
    assert data.y.tolist() == images.y.tolist()
    assert data.folds == [1, 2]
    assert abs(int((data.fold == 1).sum()) - int((data.fold == 2).sum())) <= 1
    assert data.class_names == images.class_names
    assert data.meta["seed"] == 0


@pytest.mark.parametrize("bad", [np.array([0.5, 1.0]), np.array([-1.0, 3.0]), np.array([256.0])])
def test_only_whole_gray_levels_travel(bad: np.ndarray) -> None:
    with pytest.raises(ArraysError, match="whole gray levels 0-255"):
        as_uint8(bad)


def test_a_missing_or_foreign_file_is_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ArraysError, match=r"run python -m training\.accelerator\.prepare"):
        read_arrays(tmp_path / "none.npz")
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, x=np.zeros(1), meta=np.asarray('{"format": "other"}'))
    with pytest.raises(ArraysError, match=r"was not written by training\.accelerator\.prepare"):
        read_arrays(foreign)
