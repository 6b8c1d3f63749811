"""Labelled images from a folder of classes or from the ELPV data set, all through the shared preprocessing."""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from service.core.model_card import ModelCard
from service.core.preprocessing import ImageError, preprocess_bytes

ELPV_CLASS_NAMES = ("functional", "defective")
ELPV_DEFECT_THRESHOLD = 0.5
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


class DataError(Exception):
    """A data set that cannot be used; the message names the fix."""


@dataclass(frozen=True)
class LabelledImages:
    """Model inputs (N, 100, 100, 1) raw 0-255, labels (N,) in {0, 1} and where each came from.

    `soft_targets` (N,) in [0, 1] is what annotators said where a data set has more than a label
    (ELPV: the share of experts' votes for "defective"); `strata` (N,) names the group each image is
    stratified in (ELPV: vote share and cell type). Both default to the label.
    """

    x: np.ndarray
    y: np.ndarray
    sources: tuple[str, ...]
    class_names: tuple[str, str]
    soft_targets: np.ndarray | None = None
    strata: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.soft_targets is None:
            object.__setattr__(self, "soft_targets", self.y.astype(np.float32))
        if self.strata is None:
            object.__setattr__(self, "strata", np.array([f"label {v}" for v in self.y]))

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: np.ndarray) -> LabelledImages:
        return LabelledImages(
            self.x[index], self.y[index], tuple(self.sources[i] for i in index), self.class_names,
            self.soft_targets[index], self.strata[index],
        )

    def class_counts(self) -> dict[str, int]:
        return {name: int((self.y == k).sum()) for k, name in enumerate(self.class_names)}


def _read(paths: list[Path], labels: list[int], class_names: tuple[str, str]) -> LabelledImages:
    arrays = []
    for path in paths:
        try:
            arrays.append(preprocess_bytes(path.read_bytes()))
        except ImageError as exc:
            raise DataError(f"{path}: {exc}") from exc
        except OSError as exc:
            raise DataError(f"{path}: cannot read ({exc.strerror})") from exc
    return LabelledImages(
        np.stack(arrays), np.asarray(labels, dtype=np.int64), tuple(map(str, paths)), class_names
    )


def load_folder(root: Path, decode: bool = True) -> LabelledImages:
    """Two subfolders, one per class; sorted names, the second is the positive class (as Keras does).
    decode=False reads no image (x is empty per file): enough to rebuild a split."""
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) != 2:
        raise DataError(
            f"data folder {root} must hold exactly two class subfolders, found {len(classes)}: {classes}"
        )
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        files = sorted(
            p for p in (root / name).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise DataError(f"class folder {root / name} holds no images")
        paths += files
        labels += [label] * len(files)
    if not decode:
        return LabelledImages(np.zeros((len(paths), 0), np.float32), np.asarray(labels, dtype=np.int64),
                              tuple(map(str, paths)), (classes[0], classes[1]))
    return _read(paths, labels, (classes[0], classes[1]))


def load_extra(root: Path, class_names: tuple[str, str]) -> LabelledImages:
    """Images to train on beside the data set (`dataset --from-log` writes them): one subfolder per class,
    named as the data set's classes; a class may have none."""
    if not root.is_dir():
        raise DataError(f"extra data folder {root} does not exist")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [name for name in folders if name not in class_names]
    if unknown:
        raise DataError(f"extra data folder {root} holds {unknown}: its subfolders must be classes of the data set, "
                        f"{list(class_names)}")
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(class_names):
        files = sorted(p for p in (root / name).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise DataError(f"extra data folder {root} holds no images in {[str(root / n) for n in class_names]}")
    extra = _read(paths, labels, class_names)
    return LabelledImages(extra.x, extra.y, extra.sources, class_names,
                          strata=np.array([f"extra, label {v}" for v in extra.y]))


def concatenate(first: LabelledImages, second: LabelledImages) -> LabelledImages:
    if first.class_names != second.class_names:
        raise DataError(f"classes differ: {first.class_names} and {second.class_names}")
    return LabelledImages(
        np.concatenate([first.x, second.x]), np.concatenate([first.y, second.y]), first.sources + second.sources,
        first.class_names, np.concatenate([first.soft_targets, second.soft_targets]),
        np.concatenate([first.strata, second.strata]),
    )


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def elpv_root() -> Path:
    spec = importlib.util.find_spec("elpv_dataset")
    if spec is None or spec.origin is None:
        raise DataError("the ELPV data set is not installed: pip install '.[train]'")
    return Path(spec.origin).parent / "data"


def elpv_table() -> np.ndarray:
    """ELPV's labels.csv: per cell its image path, the annotators' defect probability and cell type."""
    return np.genfromtxt(
        elpv_root() / "labels.csv", dtype=["U32", "f8", "U8"], names=["path", "probability", "type"]
    )


def load_elpv(decode: bool = True) -> LabelledImages:
    """The 2,624 ELPV cells, read from the package's original 300x300 PNG files.

    Soft targets are the experts' defect probability (0, 1/3, 2/3, 1); strata pair it with the cell
    type (mono, poly), so folds keep both mixes. decode=False skips the images (x is empty per cell):
    enough to rebuild splits and folds, which depend on labels and strata only.
    """
    root = elpv_root()
    table = elpv_table()
    labels = (table["probability"] >= ELPV_DEFECT_THRESHOLD).astype(int)
    paths = [root / p for p in table["path"]]
    if decode:
        images = _read(paths, labels.tolist(), ELPV_CLASS_NAMES)
    else:
        images = LabelledImages(np.zeros((len(paths), 0), np.float32), labels, tuple(map(str, paths)), ELPV_CLASS_NAMES)
    votes = np.round(table["probability"] * 3).astype(int)
    return LabelledImages(
        images.x, images.y, images.sources, images.class_names,
        soft_targets=table["probability"].astype(np.float32),
        strata=np.array([f"{v}/3 {kind}" for v, kind in zip(votes, table["type"], strict=True)]),
    )


@dataclass(frozen=True)
class Split:
    train: LabelledImages
    validation: LabelledImages
    test: LabelledImages


def split(
    data: LabelledImages, test_fraction: float, validation_fraction: float, seed: int
) -> Split:
    """Stratified, seeded: the test set first (training never sees it), then validation from the rest."""
    for name, labelled in (("data set", data),):
        if min(labelled.class_counts().values()) < 4:
            raise DataError(f"the {name} needs at least 4 images of each class: {labelled.class_counts()}")
    index = np.arange(len(data))
    try:
        rest, test = train_test_split(
            index, test_size=test_fraction, stratify=data.y, random_state=seed
        )
        if validation_fraction > 0:
            train, validation = train_test_split(
                rest, test_size=validation_fraction, stratify=data.y[rest], random_state=seed
            )
        else:
            train, validation = rest, rest[:0]
    except ValueError as exc:
        # Fractions too small (or large) for the data: each part needs every class at least once.
        raise DataError(
            f"cannot split {data.class_counts()} with test fraction {test_fraction} and "
            f"validation fraction {validation_fraction}: {exc}"
        ) from exc
    return Split(data.subset(np.sort(train)), data.subset(np.sort(validation)), data.subset(np.sort(test)))


def with_positive_class(images: LabelledImages, positive: str | None) -> LabelledImages:
    """The same images with `positive` as label 1 (the class the model's probability is of); None keeps the
    sorted order. Applied after the split, so the split does not depend on which class is positive."""
    negative_now, positive_now = images.class_names
    if positive is None or positive == positive_now:
        return images
    if positive != negative_now:
        raise DataError(f"--positive-class {positive!r} is not one of the classes {list(images.class_names)}")
    return LabelledImages(
        images.x, 1 - images.y, images.sources, (positive_now, negative_now), 1.0 - images.soft_targets,
        images.strata,
    )


def positive_split(parts: Split, positive: str | None) -> Split:
    return Split(*(with_positive_class(part, positive) for part in (parts.train, parts.validation, parts.test)))


def recorded_split(card: ModelCard, data_dir: Path | None = None) -> Split:
    """Rebuilds the exact split a model was trained on from the settings its card recorded: ELPV from the
    package, a folder data set from `data_dir`."""
    if card.dataset is None or card.dataset.split is None:
        raise DataError("the model card records no data split; retrain, or pass a card with one")
    parts = card.dataset.split
    if parts.test_fraction is None or parts.validation_fraction is None or parts.seed is None:
        raise DataError("the model card lacks the split's fractions or seed; cannot rebuild the split")
    if data_dir is not None:
        data = load_folder(data_dir)
    elif card.dataset.name == "elpv":
        data = load_elpv()
    else:
        raise DataError(f"the model was trained on '{card.dataset.name}': pass --data-dir with its folder")
    return positive_split(split(data, parts.test_fraction, parts.validation_fraction, parts.seed), card.positive_class)


def with_extra(parts: Split, root: Path) -> tuple[Split, dict]:
    """The split with `root`'s images (load_extra) added to its training part, less any image whose bytes are
    those of a test or validation image (which would make the held-out figures a training score); what was
    added and left out, for the card."""
    extra = load_extra(root, parts.train.class_names)
    hashes = [file_sha256(source) for source in extra.sources]
    test = {file_sha256(source) for source in parts.test.sources}
    validation = {file_sha256(source) for source in parts.validation.sources}
    keep = np.array([i for i, h in enumerate(hashes) if h not in test and h not in validation], dtype=np.int64)
    added = extra.subset(keep)
    manifest = root / "manifest.json"
    record = {
        "path": str(root),
        "images": len(added),
        "class_counts": added.class_counts(),
        "left_out_test": sum(h in test for h in hashes),
        "left_out_validation": sum(h in validation and h not in test for h in hashes),
        "manifest_sha256": file_sha256(manifest) if manifest.is_file() else None,
    }
    return Split(concatenate(parts.train, added), parts.validation, parts.test), record


def held_out_sources(card: ModelCard, data_dir: Path | None = None) -> tuple[str, ...]:
    """The files of the test split a model's card describes, found without decoding any image: ELPV from the
    package, a folder data set from `data_dir`."""
    if card.dataset is None or card.dataset.split is None:
        raise DataError("the model card records no data split; retrain, or pass a card with one")
    parts = card.dataset.split
    if parts.test_fraction is None or parts.seed is None:
        raise DataError("the model card lacks the split's test fraction or seed; cannot rebuild the split")
    if data_dir is not None:
        data = load_folder(data_dir, decode=False)
    elif card.dataset.name == "elpv":
        data = load_elpv(decode=False)
    else:
        raise DataError(f"the model was trained on '{card.dataset.name}': pass --data-dir with its folder")
    # The test split is the first cut (split()), whatever the validation fraction.
    return split(data, parts.test_fraction, 0.0, parts.seed).test.sources


def held_out_test_set(card: ModelCard) -> LabelledImages:
    """The ELPV test split a model's card describes (the data set tools can rebuild without a folder)."""
    if card.dataset is None or card.dataset.name != "elpv":
        raise DataError("only the ELPV data set can be rebuilt from metadata")
    return recorded_split(card).test
