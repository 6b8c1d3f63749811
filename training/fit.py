"""Fitting the model: augmentation, class weights, checkpoints, early stopping and resume."""

from __future__ import annotations

import csv
import logging
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import keras
import numpy as np
import tensorflow as tf

from training.data import LabelledImages

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitSettings:
    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 1e-3
    augment: bool = True
    class_weight: bool = False
    early_stopping_patience: int = 10
    reduce_lr_patience: int = 4
    seed: int = 42
    resume: bool = False
    quarter_turns: bool = False
    lr_schedule: Literal["plateau", "cosine"] = "plateau"


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


def make_dataset(
    data: LabelledImages,
    batch_size: int,
    *,
    shuffle: bool,
    augmented: bool,
    seed: int,
    quarter_turns: bool = False,
) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices((data.x, data.y.astype(np.float32)[:, None]))
    if shuffle:
        ds = ds.shuffle(len(data), seed=seed, reshuffle_each_iteration=True)
    if augmented:
        ds = ds.map(augment_with_quarter_turns if quarter_turns else augment, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def cosine_schedule(initial: float, epochs: int, floor: float = 1e-6) -> keras.callbacks.Callback:
    """Learning rate from `initial` down to `floor` along half a cosine over `epochs`.

    A function of the epoch index, so a resumed run picks the curve up where it stopped.
    """

    def rate(epoch: int, _current: float) -> float:
        progress = min(epoch / max(epochs - 1, 1), 1.0)
        return floor + 0.5 * (initial - floor) * (1.0 + math.cos(math.pi * progress))

    return keras.callbacks.LearningRateScheduler(rate)


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


def fit(
    model: keras.Model,
    train: LabelledImages,
    validation: LabelledImages | None,
    settings: FitSettings,
    checkpoints: CheckpointPaths,
) -> tuple[list[float], int]:
    """Fits in place; returns per-epoch training throughput and how many epochs ran in total."""
    checkpoints.root.mkdir(parents=True, exist_ok=True)
    if not settings.resume:
        shutil.rmtree(checkpoints.backup, ignore_errors=True)
        checkpoints.history.unlink(missing_ok=True)
        checkpoints.best_weights.unlink(missing_ok=True)
    monitor = "val_loss" if validation is not None and len(validation) else "loss"
    best, since_best = _history_best(checkpoints.history, monitor)
    if settings.resume and math.isfinite(best):
        log.info("resuming: best %s so far %.4f, %d epochs ago", monitor, best, since_best)
    throughput = Throughput(len(train))
    early_stopping = keras.callbacks.EarlyStopping(
        monitor=monitor, patience=settings.early_stopping_patience, verbose=1
    )
    callbacks = [
        throughput,
        # Kept after a finished run too, so --resume with more epochs continues instead of starting over.
        keras.callbacks.BackupAndRestore(str(checkpoints.backup), delete_checkpoint=False),
        keras.callbacks.ModelCheckpoint(
            str(checkpoints.best_weights),
            monitor=monitor,
            save_best_only=True,
            save_weights_only=True,
            initial_value_threshold=best if math.isfinite(best) else None,
            verbose=1,
        ),
        early_stopping,
        cosine_schedule(settings.learning_rate, settings.epochs)
        if settings.lr_schedule == "cosine"
        else keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, factor=0.5, patience=settings.reduce_lr_patience, min_lr=1e-6, verbose=1
        ),
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
        ),
        validation_data=(
            make_dataset(validation, settings.batch_size, shuffle=False, augmented=False, seed=0)
            if monitor == "val_loss"
            else None
        ),
        epochs=settings.epochs,
        class_weight=balanced_class_weight(train.y) if settings.class_weight else None,
        callbacks=callbacks,
        # One line per epoch in a log file; the live progress bar on a terminal.
        verbose=1 if sys.stdout.isatty() else 2,
    )
    if checkpoints.best_weights.exists():
        model.load_weights(str(checkpoints.best_weights))
    return throughput.per_epoch, len(read_history(checkpoints.history))
