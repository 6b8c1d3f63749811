"""Stratified K-fold: every non-test image validated exactly once, folds disjoint and alike in mix."""

from __future__ import annotations

import numpy as np
import pytest

from training.data import DataError, LabelledImages
from training.folds import stratification_keys, stratified_folds


def labelled(labels: list[int], strata: list[str] | None = None) -> LabelledImages:
    y = np.array(labels)
    return LabelledImages(np.zeros((len(y), 2, 2, 1), np.float32), y, tuple(map(str, range(len(y)))), ("a", "b"),
                          strata=None if strata is None else np.array(strata))  # fmt: skip


def elpv_like(seed: int = 0) -> LabelledImages:
    """Vote shares and cell types in ELPV's proportions (2,624 cells scaled down to 400)."""
    rng = np.random.default_rng(seed)
    votes = rng.choice([0, 1, 2, 3], size=400, p=[0.58, 0.11, 0.04, 0.27])
    kinds = rng.choice(["mono", "poly"], size=400, p=[0.42, 0.58])
    return LabelledImages(
        np.zeros((400, 2, 2, 1), np.float32), (votes >= 2).astype(int), tuple(map(str, range(400))), ("a", "b"),
        soft_targets=(votes / 3).astype(np.float32),
        strata=np.array([f"{v}/3 {k}" for v, k in zip(votes, kinds, strict=True)]),
    )  # fmt: skip


def test_folds_are_disjoint_and_validate_every_image_exactly_once() -> None:
    data = elpv_like()

    folds = stratified_folds(data, 5, seed=42)

    assert [fold.number for fold in folds] == [1, 2, 3, 4, 5]
    validated = np.concatenate([fold.validation for fold in folds])
    assert sorted(validated.tolist()) == list(range(len(data)))
    for fold in folds:
        assert set(fold.train).isdisjoint(fold.validation)
        assert len(fold.train) + len(fold.validation) == len(data)


def test_folds_keep_the_mix_of_labels_vote_shares_and_cell_types() -> None:
    data = elpv_like()

    folds = stratified_folds(data, 5, seed=42)

    for stratum in np.unique(data.strata):
        counts = [int((data.strata[fold.validation] == stratum).sum()) for fold in folds]
        assert max(counts) - min(counts) <= 1, f"{stratum}: {counts}"
    for label in (0, 1):
        counts = [int((data.y[fold.validation] == label).sum()) for fold in folds]
        # Each stratum within one image; a label sums several strata, each rounding its own way.
        assert max(counts) - min(counts) <= 2, counts


def test_folds_are_the_same_for_the_same_seed_and_differ_for_another() -> None:
    data = elpv_like()

    first, again, other = (stratified_folds(data, 4, seed) for seed in (1, 1, 2))

    assert all(np.array_equal(a.validation, b.validation) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a.validation, b.validation) for a, b in zip(first, other, strict=True))


def test_a_stratum_smaller_than_the_fold_count_joins_its_label() -> None:
    data = labelled([0] * 10 + [1] * 10, ["x"] * 8 + ["rare"] * 2 + ["y"] * 10)

    keys = stratification_keys(data, folds=5)

    assert set(keys) == {"0|x", "0|rare", "1|y"}
    assert (keys[8:10] == "0|rare").all()


def test_a_folder_data_set_is_stratified_on_its_labels() -> None:
    data = labelled([0] * 6 + [1] * 9)

    folds = stratified_folds(data, 3, seed=0)

    assert [int(data.y[f.validation].sum()) for f in folds] == [3, 3, 3]


@pytest.mark.parametrize(
    ("folds", "message"),
    [
        (1, "--cv needs at least 2 folds, got 1"),
        (5, r"cannot make 5 folds: the smallest class has 3 images; use --cv 3"),
    ],
)
def test_folds_refuse_what_the_data_cannot_give(folds: int, message: str) -> None:
    with pytest.raises(DataError, match=message):
        stratified_folds(labelled([0] * 10 + [1] * 3), folds, seed=0)
