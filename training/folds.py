"""Stratified K-fold over the images training may use (never the test split).

Each image is in exactly one fold's validation part, so the folds' predictions together score every
non-test image once, out of fold. Strata are the data set's own (ELPV: the experts' vote share and
the cell type); a stratum with fewer images than folds joins its label's stratum, because
StratifiedKFold cannot spread fewer than K images over K folds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedKFold

from training.data import DataError, LabelledImages


@dataclass(frozen=True)
class Fold:
    number: int  # 1-based, as logs and folders name it
    train: np.ndarray  # indices into the data the folds were made from
    validation: np.ndarray


def stratification_keys(data: LabelledImages, folds: int) -> np.ndarray:
    """Each image's stratum, with strata too small for `folds` merged into their label's."""
    keys = np.array([f"{label}|{stratum}" for label, stratum in zip(data.y, data.strata, strict=True)])
    names, counts = np.unique(keys, return_counts=True)
    small = set(names[counts < folds])
    return np.array([f"{label}|rare" if key in small else key for key, label in zip(keys, data.y, strict=True)])


def stratified_folds(data: LabelledImages, folds: int, seed: int) -> list[Fold]:
    """K shuffled, seeded folds stratified on label and the data set's strata."""
    if folds < 2:
        raise DataError(f"--cv needs at least 2 folds, got {folds}")
    smallest = min(data.class_counts().values())
    if smallest < folds:
        raise DataError(
            f"cannot make {folds} folds: the smallest class has {smallest} images; use --cv {max(smallest, 2)} "
            "or fewer, or add images"
        )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    keys = stratification_keys(data, folds)
    return [
        Fold(number, np.sort(train), np.sort(validation))
        for number, (train, validation) in enumerate(splitter.split(np.zeros(len(keys)), keys), start=1)
    ]
