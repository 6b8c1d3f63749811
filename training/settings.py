"""The settings of one `train` run, typed and frozen, with their defaults: the CLI's options are parsed into
them, and the steps in training/pipeline.py take them (or the group they need), so a run is built in code too.

Each group's field names are the CLI's option names (`--test-split` is `data.test_split`). Nothing here imports
TensorFlow: `train --help` and a bad option answer at once.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

DEFAULT_OUT = Path("models")


class SettingsError(ValueError):
    """Settings that cannot run together; the message names the option to change."""


@dataclass(frozen=True)
class DataSettings:
    """Which images, which class is positive, and how they are split."""

    dataset: Literal["elpv", "folder"] = "elpv"
    data_dir: Path | None = None
    positive_class: str | None = None
    validation_data: Path | None = None
    extra_data: Path | None = None
    test_split: float = 0.25
    validation_split: float = 0.15


@dataclass(frozen=True)
class RecipeSettings:
    """How the model is built and fitted."""

    epochs: int = 40
    batch_size: int = 32
    learning_rate: float = 1e-3
    augment: bool = True
    quarter_turns: bool = False
    lr_schedule: Literal["plateau", "cosine"] = "plateau"
    warmup_epochs: int = 0
    soft_targets: bool = False
    ema: bool = False
    ema_momentum: float = 0.995
    jitter: float = 0.0
    recalibrate_batchnorm: bool = False
    initial_weights: Path | None = None
    class_weight: bool = False
    early_stopping_patience: int = 10
    reduce_lr_patience: int = 4
    mixed_precision: bool = False
    seed: int = 42
    resume: bool = False
    filters: tuple[int, ...] = (512, 256, 128)


@dataclass(frozen=True)
class SelectionSettings:
    """Cross-validation and the comparison with an earlier model."""

    cv: int = 0
    cv_only: int | None = None
    compare_with: Path | None = None


@dataclass(frozen=True)
class ClusterSettings:
    """Where cross-validation's folds run: here (ray None) or as Ray tasks ("" = this machine's cluster)."""

    ray: str | None = None
    storage: Path | None = None
    fold_cpus: float = 1.0


@dataclass(frozen=True)
class OutputSettings:
    """What the run writes, where, and under which name."""

    out: Path = DEFAULT_OUT
    name: str = "seed-cnn"
    checkpoint_dir: Path | None = None
    threshold: float | Literal["auto"] = 0.5
    export_only: bool = False
    int8: bool = False
    tta: bool = False

    @property
    def checkpoints(self) -> Path:
        return self.checkpoint_dir or self.out / "checkpoints"


@dataclass(frozen=True)
class TrainSettings:
    data: DataSettings = field(default_factory=DataSettings)
    recipe: RecipeSettings = field(default_factory=RecipeSettings)
    selection: SelectionSettings = field(default_factory=SelectionSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    # Recorded in the card: the command line that reproduces the run.
    command: str = "train"

    def __post_init__(self) -> None:
        if (problem := _first_problem(self)) is not None:
            raise SettingsError(problem)

    @property
    def recalibrates_batchnorm(self) -> bool:
        """Always with --cv: the folds' out-of-fold predictions, which chose the recipe, were measured so."""
        return bool(self.recipe.recalibrate_batchnorm or self.selection.cv)


GROUPS: dict[str, type] = {
    "data": DataSettings, "recipe": RecipeSettings, "selection": SelectionSettings, "cluster": ClusterSettings,
    "output": OutputSettings,
}  # fmt: skip


def _first_problem(s: TrainSettings) -> str | None:
    """The first rule the settings break, in the order the CLI has always reported them; None if none."""
    data, fit, selection, cluster, output = s.data, s.recipe, s.selection, s.cluster, s.output
    checks = (
        (data.dataset == "folder" and data.data_dir is None, "--dataset folder needs --data-dir"),
        (not 0 < data.test_split < 1, "--test-split must be between 0 and 1"),
        (not 0 <= data.validation_split < 1, "--validation-split must be in [0, 1)"),
        (fit.epochs < 1 or fit.batch_size < 1, "--epochs and --batch-size must be positive"),
        (output.threshold != "auto" and not 0 < output.threshold < 1,
         "--threshold must be between 0 and 1, or auto"),
        (selection.cv == 1 or selection.cv < 0, "--cv needs at least 2 folds (0 turns it off)"),
        (selection.cv_only is not None and not (selection.cv and 1 <= selection.cv_only <= selection.cv),
         "--cv-only needs --cv K and a count between 1 and K"),
        (cluster.ray is not None and not selection.cv, "--ray runs cross-validation folds: it needs --cv K"),
        (cluster.ray is None and (cluster.storage is not None or cluster.fold_cpus != 1.0),
         "--storage and --fold-cpus go with --ray"),
        (cluster.fold_cpus <= 0, "--fold-cpus must be positive"),
        (not 0 <= fit.jitter < 1, "--jitter must be in [0, 1)"),
        (not 0 < fit.ema_momentum < 1, "--ema-momentum must be between 0 and 1"),
        (fit.warmup_epochs < 0 or fit.warmup_epochs >= fit.epochs,
         "--warmup-epochs must be at least 0 and fewer than --epochs"),
    )  # fmt: skip
    for broken, message in checks:
        if broken:
            return message
    if data.extra_data is not None and not data.extra_data.is_dir():
        return f"--extra-data {data.extra_data} is not a folder"
    if selection.compare_with is not None and not selection.compare_with.is_file():
        return f"--compare-with {selection.compare_with} is not a file"
    if fit.initial_weights is not None and not fit.initial_weights.is_file():
        return f"--initial-weights {fit.initial_weights} is not a file"
    return None


def filters_argument(text: str) -> tuple[int, ...]:
    """'8,16,32' -> (8, 16, 32), for --filters (train and the accelerator search): at most three blocks fit a
    100x100 input."""
    try:
        counts = tuple(int(v) for v in text.split(","))
    except ValueError:
        counts = ()
    if not 1 <= len(counts) <= 3 or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected 1 to 3 positive integers separated by commas, got {text!r}")
    return counts
