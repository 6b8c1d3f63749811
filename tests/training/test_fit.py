"""Fitting: the tiny variant learns a separable toy set, resumes where it stopped, and augments honestly."""

from __future__ import annotations

import csv
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from tests.training.toy import TINY_EPOCHS, Fitted, make_tiny_model

if TYPE_CHECKING:
    from training.data import Split


def history_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_tiny_model_learns_a_separable_toy_set(fitted_tiny: Fitted, toy_split: Split) -> None:
    probability = fitted_tiny.model.predict(toy_split.test.x, verbose=0)[:, 0]

    accuracy = float(((probability >= 0.5) == toy_split.test.y).mean())
    assert accuracy >= 0.8, f"held-out accuracy {accuracy:.2f} on {len(toy_split.test)} toy images"


@pytest.mark.slow
def test_fit_reports_every_epoch_and_keeps_the_best_weights(fitted_tiny: Fitted) -> None:
    rows = history_rows(fitted_tiny.checkpoints.history)

    assert fitted_tiny.epochs_run == len(rows) == TINY_EPOCHS
    assert [int(row["epoch"]) for row in rows] == list(range(TINY_EPOCHS))
    assert {"loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc", "train_images_per_s"} <= set(rows[0])
    assert len(fitted_tiny.throughput) == TINY_EPOCHS
    assert all(rate > 0 for rate in fitted_tiny.throughput)
    assert fitted_tiny.checkpoints.best_weights.is_file()


@pytest.mark.slow
def test_resume_runs_only_the_epochs_that_are_left(toy_split: Split, tmp_path: Path) -> None:
    from training.fit import CheckpointPaths, FitSettings, fit

    checkpoints = CheckpointPaths(tmp_path / "checkpoints")
    train = toy_split.train.subset(np.arange(0, len(toy_split.train), 2))
    settings = FitSettings(epochs=2, batch_size=16, seed=0, augment=False)
    fit(make_tiny_model(seed=0), train, toy_split.validation, settings, checkpoints)
    after_two = history_rows(checkpoints.history)

    # A new process: a fresh model, resumed from the checkpoint folder.
    throughput, epochs_run = fit(
        make_tiny_model(seed=1),
        train,
        toy_split.validation,
        FitSettings(epochs=3, batch_size=16, seed=0, augment=False, resume=True),
        checkpoints,
    )

    rows = history_rows(checkpoints.history)
    assert len(throughput) == 1
    assert epochs_run == len(rows) == 3
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2]
    assert rows[:2] == after_two


@pytest.mark.slow
def test_fit_without_resume_starts_over(toy_split: Split, tmp_path: Path) -> None:
    from training.fit import CheckpointPaths, FitSettings, fit

    checkpoints = CheckpointPaths(tmp_path / "checkpoints")
    # What an earlier, longer run left behind.
    checkpoints.backup.mkdir(parents=True)
    (checkpoints.backup / "training_metadata.json").write_text('{"epoch": 4, "batch": 0}')
    checkpoints.history.write_text("epoch,loss\n" + "".join(f"{e},0.1\n" for e in range(5)))
    train = toy_split.train.subset(np.arange(0, len(toy_split.train), 4))

    settings = FitSettings(epochs=1, batch_size=16, augment=False)
    _, epochs_run = fit(make_tiny_model(), train, None, settings, checkpoints)

    rows = history_rows(checkpoints.history)
    assert epochs_run == len(rows) == 1
    assert rows[0]["epoch"] == "0"
    assert rows[0]["val_loss"] in ("", "NA")  # no validation data: monitored on the training loss


def dihedral(image: np.ndarray) -> list[np.ndarray]:
    """The 8 flips and 90-degree rotations of an (H, W, C) image."""
    turns = [np.rot90(image, k, axes=(0, 1)) for k in range(4)]
    return turns + [np.flip(turn, axis=1) for turn in turns]


def flips(image: np.ndarray) -> list[np.ndarray]:
    """The 4 flips of an (H, W, C) image that keep horizontal lines horizontal."""
    return [image, np.flip(image, axis=1), np.flip(image, axis=0), np.flip(image, axis=(0, 1))]


@pytest.mark.parametrize(
    ("augmenter", "allowed", "expected"),
    [("augment", flips, 4), ("augment_with_quarter_turns", dihedral, 8)],
)
def test_augment_yields_every_allowed_transform_only_and_keeps_the_label(
    augmenter: str, allowed: Callable[[np.ndarray], list[np.ndarray]], expected: int
) -> None:
    import keras
    import tensorflow as tf

    from training import fit

    keras.utils.set_random_seed(0)
    image = np.random.default_rng(0).integers(0, 256, (100, 100, 1)).astype(np.float32)
    assert len({t.tobytes() for t in dihedral(image)}) == 8  # the test image has no symmetry
    transforms = allowed(image)
    label = tf.constant([1.0])

    seen = set()
    for _ in range(64):
        x, y = getattr(fit, augmenter)(tf.constant(image), label)
        assert x.shape == image.shape
        assert x.dtype == tf.float32
        assert y.numpy().tolist() == [1.0]
        matches = [k for k, t in enumerate(transforms) if np.array_equal(x.numpy(), t)]
        assert len(matches) == 1, f"{augmenter} produced a transform outside the allowed ones"
        seen.add(matches[0])
    assert seen == set(range(expected)), f"only transforms {sorted(seen)} in 64 draws"


def test_cosine_schedule_falls_from_the_initial_rate_to_the_floor_and_resumes_by_epoch() -> None:
    from training.fit import cosine_schedule

    rate = cosine_schedule(4e-4, epochs=10, floor=1e-6).schedule
    rates = [rate(epoch, 0.0) for epoch in range(12)]

    assert rates[0] == pytest.approx(4e-4)
    assert rates[9] == pytest.approx(1e-6)
    assert rates[10] == rates[11] == pytest.approx(1e-6)  # past the end it stays at the floor
    assert all(a > b for a, b in itertools.pairwise(rates[:10]))
    assert rates[5] == rate(5, 123.0)  # depends on the epoch only, so --resume continues the curve


@pytest.mark.parametrize("augmented", [False, True])
def test_make_dataset_batches_images_with_their_labels(augmented: bool) -> None:
    from training.data import LabelledImages
    from training.fit import make_dataset

    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (10, 100, 100, 1)).astype(np.float32)
    data = LabelledImages(x, np.array([0, 1] * 5), tuple(map(str, range(10))), ("a", "b"))

    batches = list(make_dataset(data, 4, shuffle=False, augmented=augmented, seed=0))

    assert [tuple(b[0].shape) for b in batches] == [(4, 100, 100, 1), (4, 100, 100, 1), (2, 100, 100, 1)]
    images = np.concatenate([b[0].numpy() for b in batches])
    labels = np.concatenate([b[1].numpy() for b in batches])
    assert labels.shape == (10, 1)
    assert labels.dtype == np.float32
    assert labels[:, 0].tolist() == data.y.tolist()
    for got, original in zip(images, x, strict=True):
        if augmented:
            assert any(np.array_equal(got, t) for t in flips(original))
        else:
            np.testing.assert_array_equal(got, original)  # validation and test images are never augmented


def test_balanced_class_weight_weighs_classes_inversely_to_their_frequency() -> None:
    from training.fit import balanced_class_weight

    weights = balanced_class_weight(np.array([0] * 75 + [1] * 25))

    assert weights == pytest.approx({0: 100 / 150, 1: 100 / 50})
