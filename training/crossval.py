"""K-fold cross-validation of one frozen recipe: out-of-fold predictions for every non-test image,
per epoch, from which the number of epochs and the threshold are chosen.

Layout of the checkpoint folder (each fold resumable on its own, a finished fold skipped):

    folds.json              the folds' validation indices, so --resume refuses other folds
    fold-1/                 CheckpointPaths of fold 1: backup/, history.csv, last.weights.h5
    fold-1/predictions.npy  (epochs, fold images): out-of-fold probabilities after each epoch, with
                            BatchNorm statistics measured on 256 of the fold's training images
    fold-1/raw_predictions.npy  the same from the raw weights, when the optimizer keeps an EMA
    fold-1/flips.npy        (fold images,): the flip-averaged ones after the last epoch
    fold-1/recalibrated.npy (2, fold images): plain and flip-averaged after the last epoch, with
                            BatchNorm statistics measured on the fold's training images
    fold-1/done             written when the fold has run all its epochs
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import keras
import numpy as np
from sklearn import metrics

from training.batchnorm import recalibrate_batchnorm
from training.data import DataError, LabelledImages
from training.evaluate import best_threshold, log_loss
from training.fit import CheckpointPaths, EpochPredictions, FitSettings, fit
from training.flips import flip_averaged_predict
from training.folds import Fold

log = logging.getLogger(__name__)
# BatchNorm statistics before each epoch's out-of-fold predictions come from this many of the fold's
# training images (256 x 98 x 98 positions per first-block channel); the whole fold costs a third of an epoch.
CALIBRATION_IMAGES = 256


@dataclass(frozen=True)
class FoldPaths:
    root: Path

    @property
    def checkpoints(self) -> CheckpointPaths:
        return CheckpointPaths(self.root)

    @property
    def predictions(self) -> Path:
        return self.root / "predictions.npy"

    @property
    def raw_predictions(self) -> Path:
        return self.root / "raw_predictions.npy"

    @property
    def flips(self) -> Path:
        return self.root / "flips.npy"

    @property
    def recalibrated(self) -> Path:
        return self.root / "recalibrated.npy"

    @property
    def done(self) -> Path:
        return self.root / "done"


def fold_paths(root: Path, number: int) -> FoldPaths:
    return FoldPaths(root / f"fold-{number}")


def check_same_folds(root: Path, folds: list[Fold], resume: bool) -> None:
    record = root / "folds.json"
    wanted = {str(f.number): f.validation.tolist() for f in folds}
    if resume and record.exists() and json.loads(record.read_text()) != wanted:
        raise DataError(
            f"{record} holds other folds (another data set, --cv or --seed); resume with the settings that "
            "made them, or use another --checkpoint-dir"
        )
    root.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(wanted))


def _spread_sample(x: np.ndarray, count: int) -> np.ndarray:
    """Evenly spaced images: ELPV's table is ordered, so the first ones would all be of one kind."""
    return x[np.linspace(0, len(x) - 1, min(count, len(x))).astype(int)]


def run_folds(
    data: LabelledImages,
    folds: list[Fold],
    settings: FitSettings,
    root: Path,
    build_model: Callable[[], keras.Model],
    only: int | None = None,
) -> list[int]:
    """Fits one fresh model per fold (the first `only` folds when given); returns the fold numbers run.

    No validation-based choice happens inside a fold: the schedule runs to its end and every epoch's
    out-of-fold probabilities are kept, so the choice is made afterwards over all folds at once.
    """
    check_same_folds(root, folds, settings.resume)
    chosen = folds[:only] if only else folds
    for fold in chosen:
        if settings.resume and fold_paths(root, fold.number).done.exists():
            log.info("fold %d of %d already done", fold.number, len(folds))
            continue
        run_fold(data, fold, len(folds), settings, root, build_model)
    return [fold.number for fold in chosen]


def run_fold(
    data: LabelledImages,
    fold: Fold,
    total: int,
    settings: FitSettings,
    root: Path,
    build_model: Callable[[], keras.Model],
) -> None:
    """One fold, fitted in this process: its out-of-fold predictions per epoch, then `done`."""
    paths = fold_paths(root, fold.number)
    if not settings.resume:
        for stale in (paths.predictions, paths.raw_predictions, paths.flips, paths.recalibrated, paths.done):
            stale.unlink(missing_ok=True)
    log.info("fold %d of %d: %d training, %d out-of-fold images",
             fold.number, total, len(fold.train), len(fold.validation))
    # One model per fold: free the last one's graph (clear_session also resets the dtype policy).
    policy = keras.mixed_precision.global_policy()
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(settings.seed + fold.number)
    model = build_model()
    held_back = data.subset(fold.validation)
    fitted = data.subset(fold.train)
    fit(model, fitted, None, replace(settings, keep="last", seed=settings.seed + fold.number),
        paths.checkpoints,
        extra_callbacks=[EpochPredictions(held_back.x, paths.predictions, paths.raw_predictions,
                                          calibration_x=_spread_sample(fitted.x, CALIBRATION_IMAGES))])
    # fit() has left the averaged weights (if any) in the model; these measure the last epoch's variants.
    np.save(paths.flips, flip_averaged_predict(model, held_back.x)[:, 0].astype(np.float32))
    recalibrate_batchnorm(model, fitted.x)
    plain = model.predict(held_back.x, batch_size=64, verbose=0)[:, 0]
    flips = flip_averaged_predict(model, held_back.x)[:, 0]
    np.save(paths.recalibrated, np.stack([plain, flips]).astype(np.float32))
    paths.done.write_text("")


def _scores(y: np.ndarray, probability: np.ndarray, threshold: float) -> dict:
    return {
        "accuracy": float(np.mean((probability >= threshold) == y)),
        "roc_auc": float(metrics.roc_auc_score(y, probability)) if len(np.unique(y)) == 2 else None,
        "log_loss": log_loss(y, probability),
    }


def _with_spread(per_fold: list[dict], key: str) -> dict:
    values = [f[key] for f in per_fold if f[key] is not None]
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
            "per_fold": values}


@dataclass(frozen=True)
class OutOfFold:
    """What the folds measured, and what was chosen from it (never from the test split)."""

    epochs: int  # chosen: lowest pooled out-of-fold log loss
    threshold: float  # chosen: highest pooled out-of-fold accuracy at that epoch
    flips_threshold: float | None  # the same choice for flip-averaged predictions (last epoch only)
    summary: dict


def summarize(data: LabelledImages, folds: list[Fold], root: Path, numbers: list[int]) -> OutOfFold:
    """Pools the out-of-fold predictions of the folds `numbers` and chooses epochs and threshold."""
    runs = [(fold, np.load(fold_paths(root, fold.number).predictions)) for fold in folds if fold.number in numbers]
    if not runs:
        raise DataError(f"no fold predictions in {root}; run the folds first")
    common = min(p.shape[0] for _, p in runs)
    index = np.concatenate([fold.validation for fold, _ in runs])
    y = data.y[index]
    pooled = np.concatenate([p[:common] for _, p in runs], axis=1)  # (epochs, images)
    curve = [log_loss(y, pooled[e]) for e in range(common)]
    epoch = int(np.argmin(curve))
    threshold = best_threshold(y, pooled[epoch])
    per_fold = [{"fold": fold.number, "images": len(fold.validation),
                 **_scores(data.y[fold.validation], p[epoch], threshold)} for fold, p in runs]
    flips_paths = [fold_paths(root, fold.number).flips for fold, _ in runs]
    flips_summary = None
    flips_threshold = None
    if all(path.exists() for path in flips_paths):
        flipped = np.concatenate([np.load(path) for path in flips_paths])
        flips_threshold = best_threshold(y, flipped)
        flips_summary = {"epoch": common, "threshold": flips_threshold,
                         **_scores(y, flipped, flips_threshold),
                         "plain_at_same_epoch": _scores(y, pooled[common - 1], best_threshold(y, pooled[common - 1]))}
    last = common - 1

    def last_epoch_variant(name: str, rows: Callable[[np.ndarray], np.ndarray]) -> dict | None:
        files = [getattr(fold_paths(root, fold.number), name) for fold, _ in runs]
        if not all(path.exists() for path in files):
            return None
        probability = np.concatenate([rows(np.load(path)) for path in files])
        chosen = best_threshold(y, probability)
        return {"threshold": chosen, **_scores(y, probability, chosen)}

    raw = [fold_paths(root, fold.number).raw_predictions for fold, _ in runs]
    raw_summary = None
    if all(path.exists() for path in raw):
        raw_pooled = np.concatenate([np.load(path)[:common] for path in raw], axis=1)
        raw_curve = [log_loss(y, raw_pooled[e]) for e in range(common)]
        raw_epoch = int(np.argmin(raw_curve))
        raw_threshold = best_threshold(y, raw_pooled[raw_epoch])
        raw_summary = {"chosen_epochs": raw_epoch + 1, "threshold": raw_threshold,
                       **_scores(y, raw_pooled[raw_epoch], raw_threshold),
                       "log_loss_by_epoch": [round(v, 4) for v in raw_curve]}
    summary = {
        "folds": len(folds), "folds_run": numbers, "images_out_of_fold": len(index),
        "covers_every_non_test_image": len(index) == len(data) and len(np.unique(index)) == len(data),
        "epochs_per_fold": common,
        "chosen_epochs": epoch + 1, "choice": "lowest pooled out-of-fold log loss",
        "threshold": threshold, "threshold_choice": "highest pooled out-of-fold accuracy at the chosen epoch",
        "pooled": _scores(y, pooled[epoch], threshold),
        "pooled_at_threshold_0.5": _scores(y, pooled[epoch], 0.5),
        "per_fold": {key: _with_spread(per_fold, key) for key in ("accuracy", "roc_auc", "log_loss")},
        "log_loss_by_epoch": [round(v, 4) for v in curve],
        "accuracy_at_0.5_by_epoch": [round(float(np.mean((pooled[e] >= 0.5) == y)), 4) for e in range(common)],
        "flip_averaged_last_epoch": flips_summary,
        "last_epoch": {"epoch": common, "threshold": best_threshold(y, pooled[last]),
                       **_scores(y, pooled[last], best_threshold(y, pooled[last]))},
        "raw_weights_without_ema": raw_summary,
        "recalibrated_batchnorm_last_epoch": last_epoch_variant("recalibrated", lambda r: r[0]),
        "recalibrated_batchnorm_flip_averaged_last_epoch": last_epoch_variant("recalibrated", lambda r: r[1]),
    }
    return OutOfFold(epoch + 1, threshold, flips_threshold, summary)
