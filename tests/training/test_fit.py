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


def fit_toy(split: Split, folder: Path, epochs: int, *, resume: bool) -> tuple[list[float], int]:
    """Half the toy training set for `epochs` into the checkpoint folder; resumed, a fresh model, as a new process
    would start."""
    from training.fit import CheckpointPaths, FitSettings, fit

    train = split.train.subset(np.arange(0, len(split.train), 2))
    settings = FitSettings(epochs=epochs, batch_size=16, seed=0, augment=False, resume=resume)
    return fit(make_tiny_model(seed=1 if resume else 0), train, split.validation, settings, CheckpointPaths(folder))


@pytest.mark.slow
def test_resume_runs_only_the_epochs_that_are_left(toy_split: Split, tmp_path: Path) -> None:
    from training.fit import CheckpointPaths

    checkpoints = CheckpointPaths(tmp_path / "checkpoints")
    fit_toy(toy_split, checkpoints.root, 2, resume=False)
    after_two = history_rows(checkpoints.history)

    throughput, epochs_run = fit_toy(toy_split, checkpoints.root, 3, resume=True)

    rows = history_rows(checkpoints.history)
    assert len(throughput) == 1
    assert epochs_run == len(rows) == 3
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2]
    assert rows[:2] == after_two


@pytest.mark.slow
def test_resume_after_a_kill_during_the_backup_restores_the_epoch_before(toy_split: Split, tmp_path: Path) -> None:
    """A process killed while writing an epoch's backup weights (a Ray node lost mid-fold) leaves them truncated,
    and the epoch's history row unwritten (the log comes after the backup): resuming reruns that epoch."""
    from training.fit import CheckpointPaths

    checkpoints = CheckpointPaths(tmp_path / "checkpoints")
    fit_toy(toy_split, checkpoints.root, 2, resume=False)
    latest = checkpoints.backup / "latest.weights.h5"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    lines = checkpoints.history.read_text().splitlines(keepends=True)
    checkpoints.history.write_text("".join(lines[:-1]))

    throughput, epochs_run = fit_toy(toy_split, checkpoints.root, 3, resume=True)

    rows = history_rows(checkpoints.history)
    assert len(throughput) == 2
    assert epochs_run == len(rows) == 3
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2]


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
    from training.schedules import cosine_schedule

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


def test_fit_settings_default_epochs_agree_with_the_cli() -> None:
    from training.cli import parse_args
    from training.fit import FitSettings

    assert FitSettings().epochs == parse_args([]).recipe.epochs == 40


def test_soft_targets_feed_the_annotators_probability_and_labels_stay_binary() -> None:
    from training.data import LabelledImages
    from training.fit import make_dataset

    votes = np.array([0.0, 1 / 3, 2 / 3, 1.0], np.float32)
    data = LabelledImages(np.zeros((4, 100, 100, 1), np.float32), (votes >= 0.5).astype(int),
                          tuple("abcd"), ("functional", "defective"), soft_targets=votes)  # fmt: skip

    (_, soft), = list(make_dataset(data, 4, shuffle=False, augmented=False, seed=0, soft_targets=True))
    (_, hard), = list(make_dataset(data, 4, shuffle=False, augmented=False, seed=0))

    np.testing.assert_allclose(soft.numpy()[:, 0], votes)
    assert hard.numpy()[:, 0].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert data.subset(np.array([3, 1])).soft_targets.tolist() == pytest.approx([1.0, 1 / 3])


def test_labelled_images_without_soft_targets_use_their_labels() -> None:
    from training.data import LabelledImages

    data = LabelledImages(np.zeros((3, 2, 2, 1)), np.array([0, 1, 1]), ("a", "b", "c"), ("x", "y"))

    assert data.soft_targets.tolist() == [0.0, 1.0, 1.0]
    assert data.strata.tolist() == ["label 0", "label 1", "label 1"]


def test_jitter_changes_brightness_and_contrast_mildly_and_stays_in_pixel_range() -> None:
    import keras
    import tensorflow as tf

    from training.fit import brightness_contrast_jitter

    keras.utils.set_random_seed(0)
    image = np.random.default_rng(0).integers(0, 256, (100, 100, 1)).astype(np.float32)
    jitter = brightness_contrast_jitter(0.1)

    outputs = [jitter(tf.constant(image), tf.constant([1.0]))[0].numpy() for _ in range(20)]

    assert all(o.min() >= 0 and o.max() <= 255 for o in outputs)
    shifts = [abs(float(o.mean() - image.mean())) for o in outputs]
    assert max(shifts) <= 0.1 * 255 / 2 + 1
    assert max(shifts) > 0.5
    correlation = [np.corrcoef(o.ravel(), image.ravel())[0, 1] for o in outputs]
    assert min(correlation) > 0.98  # the same picture: no erasing, no cut-outs


def test_cosine_rate_warms_up_linearly_then_decays_to_the_floor() -> None:
    from training.schedules import cosine_rate

    rates = [cosine_rate(epoch, 1e-3, epochs=10, warmup_epochs=3, floor=1e-6) for epoch in range(10)]

    assert rates[:3] == pytest.approx([0.25e-3, 0.5e-3, 0.75e-3])
    assert rates[3] == pytest.approx(1e-3)
    assert rates[9] == pytest.approx(1e-6)
    assert all(a > b for a, b in itertools.pairwise(rates[3:]))


@pytest.mark.slow
def test_fixed_schedule_with_ema_ends_with_the_averaged_weights_and_saves_them(
    toy_split: Split, tmp_path: Path
) -> None:
    from training.fit import CheckpointPaths, EpochPredictions, FitSettings, averaged_weights, fit
    from training.model import compile_model

    model = make_tiny_model(seed=0)
    compile_model(model, ema_momentum=0.9)
    checkpoints = CheckpointPaths(tmp_path / "checkpoints")
    predictions = tmp_path / "predictions.npy"
    settings = FitSettings(epochs=3, stop_after=2, batch_size=16, seed=0, keep="last", lr_schedule="cosine",
                           warmup_epochs=1, soft_targets=True, jitter=0.1)  # fmt: skip

    _, epochs_run = fit(model, toy_split.train, None, settings, checkpoints,
                        extra_callbacks=[EpochPredictions(toy_split.validation.x, predictions)])  # fmt: skip

    assert epochs_run == 2  # stopped after 2 epochs of a 3-epoch schedule
    assert np.load(predictions).shape == (2, len(toy_split.validation))
    assert checkpoints.last_weights.is_file()
    assert not checkpoints.best_weights.exists()
    averages = [v.numpy() for v in model.optimizer._model_variables_moving_average]
    for variable, average in zip(model.trainable_variables, averages, strict=True):
        np.testing.assert_array_equal(variable.numpy(), average)
    # Inside averaged_weights the (already averaged) model is unchanged, and the context restores it.
    before = [v.numpy().copy() for v in model.trainable_variables]
    with averaged_weights(model):
        pass
    for old, variable in zip(before, model.trainable_variables, strict=True):
        np.testing.assert_array_equal(old, variable.numpy())
    np.testing.assert_allclose(np.load(predictions)[-1], model.predict(toy_split.validation.x, verbose=0)[:, 0],
                               atol=1e-6)  # fmt: skip
