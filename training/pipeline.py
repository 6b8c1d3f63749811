"""The named steps of `train`, in the order cli.run calls them: data, (cross-validation), model, fit,
threshold, held-out evaluation, plots, export (+ flip-averaged variant), metadata, INT8."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import platform
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np

from service.core.model_card import ModelCardError, card_path_for, read_model_card
from service.core.preprocessing import INPUT_SIZE, PREPROCESSING_DESCRIPTION
from training import data as datasets
from training.crossval import OutOfFold
from training.evaluate import best_threshold, binary_metrics
from training.export import onnx_predict
from training.fit import CheckpointPaths, FitSettings

log = logging.getLogger("train")
# Enough for stable activation ranges; the calibrator keeps every batch's activations in memory.
CALIBRATION_IMAGES = 128


@dataclass(frozen=True)
class Loaded:
    everything: datasets.LabelledImages
    parts: datasets.Split


def load_data(args: argparse.Namespace) -> Loaded:
    """The data set and its split; with --cv no validation split (the folds validate)."""
    loaded = datasets.load_elpv() if args.dataset == "elpv" else datasets.load_folder(args.data_dir)
    log.info("loaded %d images: %s", len(loaded), loaded.class_counts())
    everything = datasets.with_positive_class(loaded, args.positive_class)  # a wrong name fails before the split
    negative, positive = everything.class_names
    log.info("classes: 0 = %s, 1 = %s: the model's probability = p(%s) (--positive-class chooses)",
             negative, positive, positive)
    if args.validation_data is not None:
        parts = datasets.split(loaded, args.test_split, 0.0, args.seed)
        validation = datasets.load_folder(args.validation_data)
        if validation.class_names != loaded.class_names:
            raise datasets.DataError(
                f"validation classes {validation.class_names} differ from {loaded.class_names}"
            )
        parts = datasets.Split(parts.train, validation, parts.test)
    else:
        parts = datasets.split(loaded, args.test_split, 0.0 if args.cv else args.validation_split, args.seed)
    log.info("split: train %d, validation %d, test %d", len(parts.train), len(parts.validation), len(parts.test))
    return Loaded(everything, datasets.positive_split(parts, args.positive_class))


def fit_settings(args: argparse.Namespace) -> FitSettings:
    return FitSettings(
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
        augment=args.augment, class_weight=args.class_weight,
        early_stopping_patience=args.early_stopping_patience,
        reduce_lr_patience=args.reduce_lr_patience, seed=args.seed, resume=args.resume,
        quarter_turns=args.quarter_turns, lr_schedule=args.lr_schedule, warmup_epochs=args.warmup_epochs,
        soft_targets=args.soft_targets, jitter=args.jitter,
        # A best-validation checkpoint holds raw weights, which would throw the average away.
        keep="last" if args.cv or args.ema else "best",
    )  # fmt: skip


def build_model(args: argparse.Namespace) -> keras.Model:
    from training.model import compile_model, make_model

    return compile_model(
        make_model((*INPUT_SIZE, 1), filters=args.filters), learning_rate=args.learning_rate,
        ema_momentum=args.ema_momentum if args.ema else None,
    )


def cross_validate(args: argparse.Namespace, loaded: Loaded, settings: FitSettings) -> OutOfFold:
    """--cv K: the recipe fitted K times, every non-test image predicted once out of fold."""
    from training.crossval import run_folds, summarize
    from training.folds import stratified_folds

    root = cv_root(args)
    folds = stratified_folds(loaded.parts.train, args.cv, args.seed)
    if args.export_only:  # the folds ran before: read what they measured, fit nothing
        numbers = [fold.number for fold in folds[: args.cv_only or len(folds)]]
    elif getattr(args, "ray", None) is not None:
        from training.cv_ray import run_folds_on_ray

        numbers = run_folds_on_ray(loaded.parts.train, folds, settings, root, lambda: build_model(args),
                                   only=args.cv_only, address=args.ray or None, fold_cpus=args.fold_cpus)
    else:
        numbers = run_folds(loaded.parts.train, folds, settings, root, lambda: build_model(args), only=args.cv_only)
    selection = summarize(loaded.parts.train, folds, root, numbers)
    selection.summary.update({
        "seed": args.seed, "fold_sizes": [len(fold.validation) for fold in folds],
        "stratified_on": "label x annotators' vote share x cell type" if args.dataset == "elpv" else "label",
        "fold_membership": str(root / "folds.json"),
    })  # fmt: skip
    log.info("out of fold: %s", json.dumps(selection.summary))
    return selection


def cv_root(args: argparse.Namespace) -> Path:
    """Where the folds write: --storage (reached by every node) with --ray, else CHECKPOINT_DIR/cv."""
    storage = getattr(args, "storage", None)
    return (storage or checkpoint_paths(args).root) / "cv"


def checkpoint_paths(args: argparse.Namespace) -> CheckpointPaths:
    return CheckpointPaths(args.checkpoint_dir or args.out / "checkpoints")


def fit_or_load(
    args: argparse.Namespace, model: keras.Model, parts: datasets.Split, settings: FitSettings
) -> CheckpointPaths:
    """Fits (or with --export-only loads) the weights the run keeps; returns where they are."""
    from training.fit import fit

    checkpoints = checkpoint_paths(args)
    if args.cv:
        checkpoints = CheckpointPaths(checkpoints.root / "final")
    weights = checkpoints.weights_to_export(settings.keep)
    if args.export_only:
        if not weights.exists():
            raise datasets.DataError(f"no checkpoint to export: {weights} does not exist")
        model.load_weights(str(weights))
        return checkpoints
    if args.initial_weights is not None:
        try:
            model.load_weights(str(args.initial_weights))
        except (ValueError, OSError) as exc:
            raise datasets.DataError(f"cannot load --initial-weights {args.initial_weights}: {exc}") from exc
    fit(model, parts.train, parts.validation or None, settings, checkpoints)
    return checkpoints


def float32_model(args: argparse.Namespace, model: keras.Model) -> keras.Model:
    """The served graph is float32: same weights, float32 arithmetic."""
    from training.model import make_model

    if not args.mixed_precision:
        return model
    keras.mixed_precision.set_global_policy("float32")
    served = make_model((*INPUT_SIZE, 1), filters=args.filters)
    served.set_weights(model.get_weights())
    return served


def recalibrates_batchnorm(args: argparse.Namespace) -> bool:
    """Always with --cv: the folds' out-of-fold predictions, which chose the recipe, were measured so."""
    return bool(args.recalibrate_batchnorm or args.cv)


def recalibrate(args: argparse.Namespace, model: keras.Model, parts: datasets.Split) -> None:
    if recalibrates_batchnorm(args):
        from training.batchnorm import recalibrate_batchnorm

        count = recalibrate_batchnorm(model, parts.train.x)
        log.info("BatchNorm statistics of %d layers measured on %d training images", count, len(parts.train))


def choose_threshold(
    args: argparse.Namespace, model: keras.Model, parts: datasets.Split, selection: OutOfFold | None
) -> tuple[float, str]:
    """From the folds with --cv, from the validation split with --threshold auto, else as given."""
    if selection is not None:
        return selection.threshold, "maximises pooled out-of-fold accuracy (--cv)"
    if args.threshold != "auto":
        return args.threshold, "fixed by --threshold"
    if not len(parts.validation):
        raise datasets.DataError("--threshold auto needs a validation set")
    threshold = best_threshold(parts.validation.y, model.predict(parts.validation.x, batch_size=64, verbose=0)[:, 0])
    log.info("threshold %.3f maximises validation accuracy", threshold)
    return threshold, "maximises validation accuracy"


def inference_mode_metrics(model: keras.Model, images: datasets.LabelledImages, threshold: float) -> dict:
    """Metrics of the model as served (no dropout, moving statistics), plus the log loss."""
    from training.evaluate import log_loss

    probability = model.predict(images.x, batch_size=64, verbose=0)[:, 0]
    return {**binary_metrics(images.y, probability, threshold), "log_loss": log_loss(images.y, probability)}


def with_interval(metrics: dict) -> dict:
    from training.significance import accuracy_interval

    correct = metrics["confusion_matrix"]["tn"] + metrics["confusion_matrix"]["tp"]
    low, high = accuracy_interval(correct, metrics["images"])
    return {**metrics, "accuracy_interval_95": {"low": low, "high": high, "method": "Wilson"}}


@dataclass(frozen=True)
class PreviousAnswers:
    model: Path
    threshold: float
    probability: np.ndarray


def previous_answers(previous: Path | None, test: datasets.LabelledImages) -> PreviousAnswers | None:
    """An earlier model's held-out probabilities and threshold, read before this run overwrites it."""
    if previous is None:
        return None
    try:
        threshold = read_model_card(card_path_for(previous)).threshold
    except ModelCardError as exc:
        raise datasets.DataError(f"--compare-with {previous}: {exc}") from exc
    return PreviousAnswers(previous, threshold, onnx_predict(previous, test.x)[:, 0])


def compare_with_previous(
    previous: PreviousAnswers | None, test: datasets.LabelledImages, probability: np.ndarray, threshold: float
) -> dict | None:
    """McNemar's exact test against the earlier model on the same held-out images, each at its threshold."""
    if previous is None:
        return None
    from training.significance import mcnemar_exact

    previous_correct = (previous.probability >= previous.threshold) == test.y
    result = mcnemar_exact((probability >= threshold) == test.y, previous_correct)
    return {"model": str(previous.model), "threshold": previous.threshold,
            "accuracy": float(previous_correct.mean()),
            "mcnemar_exact": {**result, "first": "this model", "second": "the previous model"}}


def write_plots(out: Path, history_csv: Path, test: datasets.LabelledImages, probability: np.ndarray,
                test_metrics: dict, class_names: tuple[str, str]) -> None:
    from training.evaluate import plot_confusion, plot_history, plot_roc

    if history_csv.exists():
        plot_history(history_csv, out / "training_curves.png")
    plot_roc(test.y, probability, out / "roc_curve.png")
    plot_confusion(test_metrics["confusion_matrix"], class_names, out / "confusion_matrix.png")


def export_verified(model: keras.Model, path: Path, test: datasets.LabelledImages) -> float:
    from training.export import export_onnx, verify_export

    export_onnx(model, path)
    difference = verify_export(model, path, test.x[:64])
    log.info("exported %s; max |keras - onnx| = %.2e on %d held-out images", path, difference, min(64, len(test)))
    return difference


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for name in ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "numpy", "pillow"):
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


def training_record(args: argparse.Namespace, settings: FitSettings, epochs_run: int, throughput: list[float],
                    parameters: int) -> dict:
    from training.export import sha256_of

    return {
        "epochs_requested": args.epochs, "epochs_run": epochs_run,
        "batch_size": args.batch_size, "learning_rate": args.learning_rate,
        "optimizer": "adam", "loss": "binary_crossentropy",
        "augment": args.augment, "quarter_turns": args.quarter_turns,
        "lr_schedule": args.lr_schedule, "warmup_epochs": args.warmup_epochs, "class_weight": args.class_weight,
        "soft_targets": args.soft_targets, "jitter": args.jitter,
        "ema_momentum": args.ema_momentum if args.ema else None,
        "recalibrate_batchnorm": recalibrates_batchnorm(args),
        "kept_weights": settings.keep, "stopped_after_epochs": settings.stop_after,
        "initial_weights": None if args.initial_weights is None else {
            "file": str(args.initial_weights), "sha256": sha256_of(args.initial_weights)},
        "early_stopping_patience": args.early_stopping_patience,
        "reduce_lr_patience": args.reduce_lr_patience, "mixed_precision": args.mixed_precision,
        "filters": list(args.filters), "parameters": parameters,
        "images_per_s_per_epoch": [round(v, 2) for v in throughput],
        "command": args.command,
    }  # fmt: skip


def base_metadata(args: argparse.Namespace, loaded: Loaded, threshold: float, threshold_selection: str) -> dict:
    parts = loaded.parts
    return {
        "name": args.name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "input": {"name": "input", "shape": [None, *INPUT_SIZE, 1], "dtype": "float32"},
        "output": {"shape": [None, 1], "dtype": "float32",
                   "meaning": f"probability of class '{loaded.everything.class_names[1]}'"},
        "class_names": list(loaded.everything.class_names),
        "positive_class": loaded.everything.class_names[1],
        "threshold": threshold,
        "threshold_selection": threshold_selection,
        "preprocessing": PREPROCESSING_DESCRIPTION,
        "dataset": {
            "name": args.dataset,
            "source": "elpv-dataset (Buerhop-Lutz et al. 2018; Deitsch et al. 2019), CC BY-NC-SA 4.0"
            if args.dataset == "elpv" else str(args.data_dir),
            "images": len(loaded.everything),
            "class_counts": loaded.everything.class_counts(),
            "split": {"train": len(parts.train), "validation": len(parts.validation),
                      "test": len(parts.test), "test_fraction": args.test_split,
                      "validation_fraction": 0.0 if args.cv else args.validation_split, "seed": args.seed,
                      "stratified": True},
        },
    }  # fmt: skip


def export_flip_averaged(model: keras.Model, onnx_path: Path, metadata: dict, test: datasets.LabelledImages,
                         threshold: float, plain_metrics: dict) -> tuple[Path, dict]:
    """model.tta.onnx + .json: the mean over the four flips folded into the graph, same signature."""
    from training.export import write_metadata
    from training.flips import FLIPS, with_flip_averaging

    path = onnx_path.with_suffix(".tta.onnx")
    averaged = with_flip_averaging(model)
    difference = export_verified(averaged, path, test)
    metrics = with_interval(binary_metrics(test.y, onnx_predict(path, test.x)[:, 0], threshold))
    write_metadata(path, {
        **metadata, "threshold": threshold, "test_metrics": metrics,
        "export": {**metadata["export"], "max_abs_difference_vs_keras": difference},
        "test_time_augmentation": {"flips": list(FLIPS), "combine": "mean of probabilities",
                                   "plain_model": onnx_path.name,
                                   "plain_test_accuracy": plain_metrics["accuracy"]},
    })
    return path, metrics


def write_int8(onnx_path: Path, metadata: dict, parts: datasets.Split, threshold: float,
               onnx_probability: np.ndarray, onnx_metrics: dict) -> None:
    from training.export import write_metadata
    from training.quantize import quantize_int8

    int8_path = onnx_path.with_suffix(".int8.onnx")
    calibration = min(CALIBRATION_IMAGES, len(parts.train))
    quantize_int8(onnx_path, int8_path, parts.train.x[:calibration])
    int8_probability = onnx_predict(int8_path, parts.test.x)[:, 0]
    int8_metrics = binary_metrics(parts.test.y, int8_probability, threshold)
    changed = int(((int8_probability >= threshold) != (onnx_probability >= threshold)).sum())
    write_metadata(int8_path, {
        **metadata, "test_metrics": int8_metrics,
        "quantization": {"method": "onnxruntime static QDQ, per-channel, U8 activations, S8 weights",
                         "calibration_images": calibration,
                         "fp32_test_accuracy": onnx_metrics["accuracy"],
                         "labels_changed_vs_fp32": changed},
    })  # fmt: skip
    log.info("int8 held-out accuracy %.4f (fp32 %.4f), %d labels changed",
             int8_metrics["accuracy"], onnx_metrics["accuracy"], changed)


def final_settings(settings: FitSettings, selection: OutOfFold) -> FitSettings:
    """The frozen recipe on all non-test images, stopped where the folds said."""
    return replace(settings, keep="last", stop_after=selection.epochs)
