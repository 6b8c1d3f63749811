"""The images the accelerator trains on, as one .npz: what `prepare` writes here and `search` reads there.

Only the non-test part of the split travels (the test split stays on this machine, so the search cannot
score on it), each image already through the service's preprocessing (100x100 gray, 0-255) and stored as
uint8, which is lossless: the preprocessing's float32 values are whole gray levels. Each image's fold (1..K)
is decided here, by training.folds, so the accelerator needs neither scikit-learn's splitter nor the data set.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from training.data import LabelledImages
    from training.folds import Fold

FORMAT = "elpv-non-test-arrays/1"


class ArraysError(ValueError):
    """A prepared file that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class Prepared:
    x: np.ndarray  # (N, 100, 100, 1) uint8
    y: np.ndarray  # (N,) 0/1
    soft_targets: np.ndarray  # (N,) float32
    strata: np.ndarray  # (N,) str
    fold: np.ndarray  # (N,) 1..K: the fold whose validation part holds the image
    class_names: tuple[str, str]
    meta: dict
    sha256: str

    @property
    def folds(self) -> list[int]:
        return sorted(int(k) for k in np.unique(self.fold))

    def __len__(self) -> int:
        return len(self.y)


def as_uint8(x: np.ndarray) -> np.ndarray:
    """Whole gray levels 0-255 as uint8; anything else would not survive the trip unchanged."""
    if x.size and (x.min() < 0 or x.max() > 255 or not np.array_equal(x, np.round(x))):
        raise ArraysError("images must hold whole gray levels 0-255 (the service's preprocessing output)")
    return x.astype(np.uint8)


def write_arrays(path: Path, data: LabelledImages, folds: list[Fold], meta: dict) -> str:
    """Writes `data` with each image's fold; returns the file's sha256 (the search records it)."""
    fold = np.zeros(len(data), np.int16)
    for f in folds:
        fold[f.validation] = f.number
    if (fold == 0).any():
        raise ArraysError("every image must be in one fold's validation part")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path, x=as_uint8(data.x), y=data.y.astype(np.int8), soft_targets=data.soft_targets.astype(np.float32),
        strata=np.asarray(data.strata, dtype=str), fold=fold, class_names=np.asarray(data.class_names),
        meta=np.asarray(json.dumps({"format": FORMAT, **meta})),
    )  # fmt: skip
    return sha256_of(path)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_arrays(path: Path) -> Prepared:
    if not path.is_file():
        raise ArraysError(f"{path} does not exist: run python -m training.accelerator.prepare here first")
    with np.load(path, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        if meta.get("format") != FORMAT:
            raise ArraysError(f"{path} was not written by training.accelerator.prepare ({FORMAT}); write it again")
        x = f["x"]
        if x.ndim == 3:
            x = x[..., None]
        names = tuple(str(n) for n in f["class_names"])
        return Prepared(
            x,
            f["y"].astype(np.int64),
            f["soft_targets"],
            f["strata"],
            f["fold"].astype(np.int64),
            (names[0], names[1]),
            meta,
            sha256_of(path),
        )
