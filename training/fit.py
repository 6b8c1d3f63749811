"""Fitting the model: augmentation, class weights, checkpoints, early stopping and resume."""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import keras
import numpy as np
import tensorflow as tf

from training.batchnorm import recalibrate_batchnorm
from training.data import LabelledImages
from training.schedules import cosine_schedule
from training.settings import RecipeSettings

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)
_RECIPE = RecipeSettings()


@dataclass(frozen=True)
class FitSettings:
    """What one fit runs with. The defaults are the CLI's (training.settings.RecipeSettings), written once there."""

    epochs: int = _RECIPE.epochs
    batch_size: int = _RECIPE.batch_size
    learning_rate: float = _RECIPE.learning_rate
    augment: bool = _RECIPE.augment
    class_weight: bool = _RECIPE.class_weight
    early_stopping_patience: int = _RECIPE.early_stopping_patience
    reduce_lr_patience: int = _RECIPE.reduce_lr_patience
    seed: int = _RECIPE.seed
    resume: bool = _RECIPE.resume
    quarter_turns: bool = _RECIPE.quarter_turns
    lr_schedule: Literal["plateau", "cosine"] = _RECIPE.lr_schedule
    # Linear warm-up epochs before the cosine decay (cosine schedule only).
    warmup_epochs: int = _RECIPE.warmup_epochs
    # Train on the annotators' soft targets (LabelledImages.soft_targets) instead of the 0/1 label.
    soft_targets: bool = _RECIPE.soft_targets
    # Brightness/contrast jitter strength: brightness +-jitter*255/2, contrast x[1-jitter, 1+jitter]; 0 = off.
    jitter: float = _RECIPE.jitter
    # "best": keep the weights of the epoch with the best monitored loss, with early stopping (a
    # validation split's choice); "last": a fixed schedule, no early stopping, the weights it ends with.
    keep: Literal["best", "last"] = "best"
    # Stop after this many epochs of an `epochs`-long schedule (the count cross-validation chose).
    stop_after: int | None = None


@dataclass(frozen=True)
class CheckpointPaths:
    root: Path

    @property
    def best_weights(self) -> Path:
        return self.root / "best.weights.h5"

    @property
    def backup(self) -> Path:
        return self.root / "backup"

    @property
    def history(self) -> Path:
        return self.root / "history.csv"

    @property
    def last_weights(self) -> Path:
        """The weights a fixed-schedule fit ended with (averaged ones when the optimizer keeps an EMA)."""
        return self.root / "last.weights.h5"

    def weights_to_export(self, keep: str) -> Path:
        return self.last_weights if keep == "last" else self.best_weights


def augment(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Random horizontal and vertical flips: labels kept, and busbars stay horizontal.

    94 % of ELPV cells show their busbars as horizontal lines, so a quarter turn makes images the
    service never sees; the flips alone keep the orientation real.
    """
    x = tf.image.random_flip_left_right(x)
    x = tf.image.random_flip_up_down(x)
    return x, y


def augment_with_quarter_turns(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Flips and 90-degree turns: for data sets without a preferred orientation."""
    x, y = augment(x, y)
    return tf.image.rot90(x, k=tf.random.uniform((), 0, 4, dtype=tf.int32)), y


def brightness_contrast_jitter(strength: float) -> Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    """Mild photometric jitter on raw 0-255 pixels: EL images differ in exposure and gain between
    modules and cameras, not in content. Clipped to the pixel range the service can send."""

    def jitter(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x = tf.image.random_contrast(x, 1.0 - strength, 1.0 + strength)
        x = tf.image.random_brightness(x, strength * 255.0 / 2)
        return tf.clip_by_value(x, 0.0, 255.0), y

    return jitter


def make_dataset(
    data: LabelledImages,
    batch_size: int,
    *,
    shuffle: bool,
    augmented: bool,
    seed: int,
    quarter_turns: bool = False,
    soft_targets: bool = False,
    jitter: float = 0.0,
) -> tf.data.Dataset:
    targets = data.soft_targets if soft_targets else data.y
    ds = tf.data.Dataset.from_tensor_slices((data.x, targets.astype(np.float32)[:, None]))
    if shuffle:
        ds = ds.shuffle(len(data), seed=seed, reshuffle_each_iteration=True)
    if augmented:
        ds = ds.map(augment_with_quarter_turns if quarter_turns else augment, num_parallel_calls=tf.data.AUTOTUNE)
    if jitter > 0:
        ds = ds.map(brightness_contrast_jitter(jitter), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


@contextlib.contextmanager
def averaged_weights(model: keras.Model) -> Iterator[None]:
    """Inside: the model holds the optimizer's moving average of its weights (when it keeps one).

    keras.callbacks.SwapEMAWeights does the same from callbacks, but its swapped state does not
    survive BackupAndRestore; this restores the raw weights on the way out, whatever happens.
    """
    optimizer = model.optimizer
    averages = getattr(optimizer, "_model_variables_moving_average", None) if optimizer is not None else None
    if not getattr(optimizer, "use_ema", False) or not averages:
        yield
        return
    raw = [variable.numpy() for variable in model.trainable_variables]
    for variable, average in zip(model.trainable_variables, averages, strict=True):
        variable.assign(average)
    try:
        yield
    finally:
        for variable, value in zip(model.trainable_variables, raw, strict=True):
            variable.assign(value)


class EpochPredictions(keras.callbacks.Callback):
    """After every epoch, the model's probabilities for held-back images, one row per epoch in an .npy
    file; a resumed epoch overwrites its row. With an EMA the file holds the averaged weights' answers
    and `raw_path` (when given) the raw weights', so one run measures both.

    With `calibration_x`, BatchNorm statistics are measured on those (training) images before each
    prediction. Measured (training.diagnose, 256 ELPV images, bf16): after 96 steps the inference
    mode still answered the class prior for every image while Keras printed 0.85 training accuracy.
    Pre-BatchNorm variances here are about 1e-3 and the moving variance starts at 1, so with momentum
    0.99 it takes some 700 steps (13 epochs of 1,672 images) before inference mode means anything;
    without this, early epochs' out-of-fold figures would score the lag, not the model.
    """

    def __init__(
        self, x: np.ndarray, path: Path, raw_path: Path | None = None, calibration_x: np.ndarray | None = None
    ) -> None:
        super().__init__()
        self.x = x
        self.path = path
        self.raw_path = raw_path
        self.calibration_x = calibration_x

    def _append(self, path: Path, epoch: int, probability: np.ndarray) -> None:
        rows = np.load(path)[:epoch] if path.exists() else np.zeros((0, len(self.x)), np.float32)
        np.save(path, np.concatenate([rows, probability[None, :]]))

    def _predict(self) -> np.ndarray:
        if self.calibration_x is not None:
            recalibrate_batchnorm(self.model, self.calibration_x)
        return self.model.predict(self.x, batch_size=64, verbose=0)[:, 0].astype(np.float32)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.raw_path is not None and getattr(self.model.optimizer, "use_ema", False):
            self._append(self.raw_path, epoch, self._predict())
        # Last, so the statistics the fit goes on updating are those of the averaged weights.
        with averaged_weights(self.model):
            self._append(self.path, epoch, self._predict())


def balanced_class_weight(y: np.ndarray) -> dict[int, float]:
    counts = np.bincount(y, minlength=2)
    return {k: len(y) / (2.0 * counts[k]) for k in range(2)}


class Throughput(keras.callbacks.Callback):
    """Training images per second, per epoch (the figure the benchmarks report)."""

    def __init__(self, images: int) -> None:
        super().__init__()
        self.images = images
        self.per_epoch: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._last = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        # Measured to the last training batch so validation time does not count.
        rate = self.images / (self._last - self._start)
        self.per_epoch.append(rate)
        if logs is not None:
            logs["train_images_per_s"] = rate


def read_history(path: Path) -> list[dict[str, str]]:
    """The per-epoch CSV log of every run that wrote to this checkpoint folder."""
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def _history_best(path: Path, monitor: str) -> tuple[float, int]:
    """Best monitored value so far and epochs since it, from the CSV log of earlier runs."""
    # CSVLogger writes "NA" for metrics an epoch did not have (val_loss without validation data).
    values = [float(row[monitor]) for row in read_history(path) if row.get(monitor, "NA") not in ("", "NA")]
    if not values:
        return math.inf, 0
    best = int(np.argmin(values))
    return values[best], len(values) - 1 - best


def _schedule(settings: FitSettings, monitor: str) -> keras.callbacks.Callback:
    if settings.lr_schedule == "cosine":
        return cosine_schedule(settings.learning_rate, settings.epochs, warmup_epochs=settings.warmup_epochs)
    return keras.callbacks.ReduceLROnPlateau(
        monitor=monitor, factor=0.5, patience=settings.reduce_lr_patience, min_lr=1e-6, verbose=1
    )


def fit(
    model: keras.Model,
    train: LabelledImages,
    validation: LabelledImages | None,
    settings: FitSettings,
    checkpoints: CheckpointPaths,
    extra_callbacks: list[keras.callbacks.Callback] | None = None,
) -> tuple[list[float], int]:
    """Fits in place; returns per-epoch training throughput and how many epochs ran in total.

    keep="best" ends with the best monitored epoch's weights; keep="last" with the weights the schedule
    ended with (the optimizer's moving average when it keeps one), also saved as last.weights.h5.
    """
    checkpoints.root.mkdir(parents=True, exist_ok=True)
    if not settings.resume:
        shutil.rmtree(checkpoints.backup, ignore_errors=True)
        for stale in (checkpoints.history, checkpoints.best_weights, checkpoints.last_weights):
            stale.unlink(missing_ok=True)
    monitor = "val_loss" if validation is not None and len(validation) else "loss"
    best, since_best = _history_best(checkpoints.history, monitor)
    if settings.resume and math.isfinite(best):
        log.info("resuming: best %s so far %.4f, %d epochs ago", monitor, best, since_best)
    throughput = Throughput(len(train))
    callbacks: list[keras.callbacks.Callback] = [throughput, *(extra_callbacks or [])]
    # Kept after a finished run too, so --resume with more epochs continues instead of starting over. Two states
    # (double_checkpoint): a process killed while writing the epoch's weights (a Ray node lost mid-fold) leaves a
    # truncated file, and the resumed attempt restores the epoch before it instead of failing to open it.
    callbacks.append(
        keras.callbacks.BackupAndRestore(str(checkpoints.backup), delete_checkpoint=False, double_checkpoint=True)
    )
    if settings.keep == "best":
        callbacks += [
            keras.callbacks.ModelCheckpoint(
                str(checkpoints.best_weights),
                monitor=monitor,
                save_best_only=True,
                save_weights_only=True,
                initial_value_threshold=best if math.isfinite(best) else None,
                verbose=1,
            ),
            keras.callbacks.EarlyStopping(monitor=monitor, patience=settings.early_stopping_patience, verbose=1),
        ]
    callbacks += [
        _schedule(settings, monitor),
        keras.callbacks.CSVLogger(str(checkpoints.history), append=settings.resume),
    ]
    model.fit(
        make_dataset(
            train,
            settings.batch_size,
            shuffle=True,
            augmented=settings.augment,
            seed=settings.seed,
            quarter_turns=settings.quarter_turns,
            soft_targets=settings.soft_targets,
            jitter=settings.jitter,
        ),
        validation_data=(
            make_dataset(validation, settings.batch_size, shuffle=False, augmented=False, seed=0)
            if monitor == "val_loss"
            else None
        ),
        epochs=settings.stop_after or settings.epochs,
        class_weight=balanced_class_weight(train.y) if settings.class_weight else None,
        callbacks=callbacks,
        # One line per epoch in a log file; the live progress bar on a terminal.
        verbose=1 if sys.stdout.isatty() else 2,
    )
    if settings.keep == "last":
        # fit() has already put the optimizer's moving average (if any) into the model.
        model.save_weights(str(checkpoints.last_weights))
    elif checkpoints.best_weights.exists():
        model.load_weights(str(checkpoints.best_weights))
    return throughput.per_epoch, len(read_history(checkpoints.history))
