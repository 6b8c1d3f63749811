"""The named steps of `train`, in the order cli.run calls them: data, (cross-validation), model, fit,
threshold, held-out evaluation, plots, export (+ flip-averaged variant), the card, INT8. Each takes the typed
settings (training/settings.py) or the group it needs, so a step runs without the command line."""

from __future__ import annotations

import contextlib
import json
import logging
import platform
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import keras
import numpy as np

from service.core.model_card import (
    DataSplit,
    FlipAveragedVariant,
    ModelCardError,
    TensorSpec,
    card_path_for,
    read_model_card,
)
from service.core.preprocessing import INPUT_SIZE, PREPROCESSING_DESCRIPTION
from training import data as datasets
from training.batchnorm import recalibrate_batchnorm
from training.crossval import OutOfFold, run_folds, summarize
from training.evaluate import best_threshold, binary_metrics, log_loss, plot_confusion, plot_history, plot_roc
from training.export import (
    EXPORT_TOLERANCE,
    EXPORT_TOOL,
    INPUT_NAME,
    OPSET,
    export_onnx,
    onnx_predict,
    sha256_of,
    verify_export,
    write_metadata,
)
from training.fit import CheckpointPaths, FitSettings, fit, read_history
from training.flips import FLIPS, with_flip_averaging
from training.folds import stratified_folds
from training.model import compile_model, make_model
from training.quantize import quantize_int8
from training.settings import DataSettings, OutputSettings, RecipeSettings, TrainSettings
from training.significance import accuracy_interval, mcnemar_exact

log = logging.getLogger("train")
# Enough for stable activation ranges; the calibrator keeps every batch's activations in memory.
CALIBRATION_IMAGES = 128


@dataclass(frozen=True)
class Loaded:
    everything: datasets.LabelledImages
    parts: datasets.Split
    extra: dict | None = None  # --extra-data: what was added to the training part (the card's dataset.extra)


def load_data(data: DataSettings, seed: int, cv: bool = False) -> Loaded:
    """The data set and its split; with cv no validation split (the folds validate)."""
    loaded = datasets.load_elpv() if data.dataset == "elpv" else datasets.load_folder(data.data_dir)
    log.info("loaded %d images: %s", len(loaded), loaded.class_counts())
    everything = datasets.with_positive_class(loaded, data.positive_class)  # a wrong name fails before the split
    negative, positive = everything.class_names
    log.info("classes: 0 = %s, 1 = %s: the model's probability = p(%s) (--positive-class chooses)",
             negative, positive, positive)
    if data.validation_data is not None:
        parts = datasets.split(loaded, data.test_split, 0.0, seed)
        validation = datasets.load_folder(data.validation_data)
        if validation.class_names != loaded.class_names:
            raise datasets.DataError(
                f"validation classes {validation.class_names} differ from {loaded.class_names}"
            )
        parts = datasets.Split(parts.train, validation, parts.test)
    else:
        parts = datasets.split(loaded, data.test_split, 0.0 if cv else data.validation_split, seed)
    extra = None
    if data.extra_data is not None:  # after the split, into training only: the test split stays the card's
        parts, extra = datasets.with_extra(parts, data.extra_data)
        log.info("extra data: %s", extra)
    log.info("split: train %d, validation %d, test %d", len(parts.train), len(parts.validation), len(parts.test))
    return Loaded(everything, datasets.positive_split(parts, data.positive_class), extra)


def fit_settings(settings: TrainSettings) -> FitSettings:
    recipe = settings.recipe
    return FitSettings(
        epochs=recipe.epochs, batch_size=recipe.batch_size, learning_rate=recipe.learning_rate,
        augment=recipe.augment, class_weight=recipe.class_weight,
        early_stopping_patience=recipe.early_stopping_patience,
        reduce_lr_patience=recipe.reduce_lr_patience, seed=recipe.seed, resume=recipe.resume,
        quarter_turns=recipe.quarter_turns, lr_schedule=recipe.lr_schedule, warmup_epochs=recipe.warmup_epochs,
        soft_targets=recipe.soft_targets, jitter=recipe.jitter,
        # A best-validation checkpoint holds raw weights, which would throw the average away.
        keep="last" if settings.selection.cv or recipe.ema else "best",
    )  # fmt: skip


def build_model(recipe: RecipeSettings) -> keras.Model:
    return compile_model(
        make_model((*INPUT_SIZE, 1), filters=recipe.filters), learning_rate=recipe.learning_rate,
        ema_momentum=recipe.ema_momentum if recipe.ema else None,
    )


def cross_validate(settings: TrainSettings, loaded: Loaded, fit_recipe: FitSettings) -> OutOfFold:
    """--cv K: the recipe fitted K times, every non-test image predicted once out of fold."""
    selection, cluster = settings.selection, settings.cluster
    root = cv_root(settings)
    folds = stratified_folds(loaded.parts.train, selection.cv, settings.recipe.seed)
    if settings.output.export_only:  # the folds ran before: read what they measured, fit nothing
        numbers = [fold.number for fold in folds[: selection.cv_only or len(folds)]]
    elif cluster.ray is not None:
        # Ray is an optional extra (the `ray` install): imported only when the folds go to a cluster.
        from training.cv_ray import run_folds_on_ray

        numbers = run_folds_on_ray(loaded.parts.train, folds, fit_recipe, root, lambda: build_model(settings.recipe),
                                   only=selection.cv_only, address=cluster.ray or None, fold_cpus=cluster.fold_cpus)
    else:
        numbers = run_folds(loaded.parts.train, folds, fit_recipe, root, lambda: build_model(settings.recipe),
                            only=selection.cv_only)
    out_of_fold = summarize(loaded.parts.train, folds, root, numbers)
    out_of_fold.summary.update({
        "seed": settings.recipe.seed, "fold_sizes": [len(fold.validation) for fold in folds],
        "stratified_on": "label x annotators' vote share x cell type" if settings.data.dataset == "elpv" else "label",
        "fold_membership": str(root / "folds.json"),
    })  # fmt: skip
    log.info("out of fold: %s", json.dumps(out_of_fold.summary))
    return out_of_fold


def cv_root(settings: TrainSettings) -> Path:
    """Where the folds write: --storage (reached by every node) with --ray, else CHECKPOINT_DIR/cv."""
    return (settings.cluster.storage or settings.output.checkpoints) / "cv"


def fit_or_load(
    settings: TrainSettings, model: keras.Model, parts: datasets.Split, fit_recipe: FitSettings
) -> CheckpointPaths:
    """Fits (or with --export-only loads) the weights the run keeps; returns where they are."""
    checkpoints = CheckpointPaths(settings.output.checkpoints)
    if settings.selection.cv:
        checkpoints = CheckpointPaths(checkpoints.root / "final")
    weights = checkpoints.weights_to_export(fit_recipe.keep)
    if settings.output.export_only:
        if not weights.exists():
            raise datasets.DataError(f"no checkpoint to export: {weights} does not exist")
        model.load_weights(str(weights))
        return checkpoints
    initial = settings.recipe.initial_weights
    if initial is not None:
        try:
            model.load_weights(str(initial))
        except (ValueError, OSError) as exc:
            raise datasets.DataError(f"cannot load --initial-weights {initial}: {exc}") from exc
    fit(model, parts.train, parts.validation or None, fit_recipe, checkpoints)
    return checkpoints


def epochs_and_throughput(checkpoints: CheckpointPaths) -> tuple[int, list[float]]:
    """Epochs the fit ran and its training images/s per epoch, from its history.csv."""
    history = read_history(checkpoints.history)
    return len(history), [float(row["train_images_per_s"]) for row in history if row.get("train_images_per_s")]


def float32_model(recipe: RecipeSettings, model: keras.Model) -> keras.Model:
    """The served graph is float32: same weights, float32 arithmetic."""
    if not recipe.mixed_precision:
        return model
    keras.mixed_precision.set_global_policy("float32")
    served = make_model((*INPUT_SIZE, 1), filters=recipe.filters)
    served.set_weights(model.get_weights())
    return served


def recalibrate(settings: TrainSettings, model: keras.Model, parts: datasets.Split) -> None:
    if settings.recalibrates_batchnorm:
        count = recalibrate_batchnorm(model, parts.train.x)
        log.info("BatchNorm statistics of %d layers measured on %d training images", count, len(parts.train))


def choose_threshold(
    output: OutputSettings, model: keras.Model, parts: datasets.Split, selection: OutOfFold | None
) -> tuple[float, str]:
    """From the folds with --cv, from the validation split with --threshold auto, else as given."""
    if selection is not None:
        return selection.threshold, "maximises pooled out-of-fold accuracy (--cv)"
    if output.threshold != "auto":
        return output.threshold, "fixed by --threshold"
    if not len(parts.validation):
        raise datasets.DataError("--threshold auto needs a validation set")
    threshold = best_threshold(parts.validation.y, model.predict(parts.validation.x, batch_size=64, verbose=0)[:, 0])
    log.info("threshold %.3f maximises validation accuracy", threshold)
    return threshold, "maximises validation accuracy"


def keras_held_out(
    model: keras.Model, test: datasets.LabelledImages, threshold: float
) -> tuple[np.ndarray, dict]:
    """The Keras model's held-out probabilities and metrics, before the export."""
    probability = model.predict(test.x, batch_size=64, verbose=0)[:, 0]
    metrics = binary_metrics(test.y, probability, threshold)
    log.info("held-out test: %s", metrics)
    return probability, metrics


def onnx_held_out(path: Path, test: datasets.LabelledImages, threshold: float) -> tuple[np.ndarray, dict]:
    """The exported file's held-out probabilities and metrics (with the accuracy's interval): the card's."""
    probability = onnx_predict(path, test.x)[:, 0]
    return probability, with_interval(binary_metrics(test.y, probability, threshold))


def inference_mode_metrics(model: keras.Model, images: datasets.LabelledImages, threshold: float) -> dict:
    """Metrics of the model as served (no dropout, moving statistics), plus the log loss."""
    probability = model.predict(images.x, batch_size=64, verbose=0)[:, 0]
    return {**binary_metrics(images.y, probability, threshold), "log_loss": log_loss(images.y, probability)}


def with_interval(metrics: dict) -> dict:
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
    previous_correct = (previous.probability >= previous.threshold) == test.y
    result = mcnemar_exact((probability >= threshold) == test.y, previous_correct)
    return {"model": str(previous.model), "threshold": previous.threshold,
            "accuracy": float(previous_correct.mean()),
            "mcnemar_exact": {**result, "first": "this model", "second": "the previous model"}}


def write_plots(out: Path, history_csv: Path, test: datasets.LabelledImages, probability: np.ndarray,
                test_metrics: dict, class_names: tuple[str, str]) -> None:
    if history_csv.exists():
        plot_history(history_csv, out / "training_curves.png")
    plot_roc(test.y, probability, out / "roc_curve.png")
    plot_confusion(test_metrics["confusion_matrix"], class_names, out / "confusion_matrix.png")


def export_verified(model: keras.Model, path: Path, test: datasets.LabelledImages) -> float:
    export_onnx(model, path)
    difference = verify_export(model, path, test.x[:64])
    log.info("exported %s; max |keras - onnx| = %.2e on %d held-out images", path, difference, min(64, len(test)))
    return difference


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "numpy", "pillow"):
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


def training_record(settings: TrainSettings, fit_recipe: FitSettings, epochs_run: int, throughput: list[float],
                    parameters: int) -> dict:
    recipe = settings.recipe
    return {
        "epochs_requested": recipe.epochs, "epochs_run": epochs_run,
        "batch_size": recipe.batch_size, "learning_rate": recipe.learning_rate,
        "optimizer": "adam", "loss": "binary_crossentropy",
        "augment": recipe.augment, "quarter_turns": recipe.quarter_turns,
        "lr_schedule": recipe.lr_schedule, "warmup_epochs": recipe.warmup_epochs,
        "class_weight": recipe.class_weight, "soft_targets": recipe.soft_targets, "jitter": recipe.jitter,
        "ema_momentum": recipe.ema_momentum if recipe.ema else None,
        "recalibrate_batchnorm": settings.recalibrates_batchnorm,
        "kept_weights": fit_recipe.keep, "stopped_after_epochs": fit_recipe.stop_after,
        "initial_weights": None if recipe.initial_weights is None else {
            "file": str(recipe.initial_weights), "sha256": sha256_of(recipe.initial_weights)},
        "early_stopping_patience": recipe.early_stopping_patience,
        "reduce_lr_patience": recipe.reduce_lr_patience, "mixed_precision": recipe.mixed_precision,
        "filters": list(recipe.filters), "parameters": parameters,
        "images_per_s_per_epoch": [round(v, 2) for v in throughput],
        "command": settings.command,
    }  # fmt: skip


def export_record(difference: float) -> dict:
    """How the .onnx file was made and how closely it reproduces Keras (verify_export's tolerance)."""
    return {"tool": EXPORT_TOOL, "opset": OPSET, "max_abs_difference_vs_keras": difference,
            "tolerance": EXPORT_TOLERANCE}


def base_metadata(settings: TrainSettings, loaded: Loaded, threshold: float, threshold_selection: str) -> dict:
    """The card's description of the model and its data; sections and field names are the schema's
    (service.core.model_card), so the service reads what training writes."""
    data, parts, everything = settings.data, loaded.parts, loaded.everything
    split = DataSplit(
        train=len(parts.train), validation=len(parts.validation), test=len(parts.test),
        test_fraction=data.test_split, validation_fraction=0.0 if settings.selection.cv else data.validation_split,
        seed=settings.recipe.seed, stratified=True,
    )  # fmt: skip
    return {
        "name": settings.output.name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "input": {"name": INPUT_NAME, **TensorSpec(shape=[None, *INPUT_SIZE, 1], dtype="float32").model_dump()},
        "output": {**TensorSpec(shape=[None, 1], dtype="float32").model_dump(),
                   "meaning": f"probability of class '{everything.class_names[1]}'"},
        "class_names": list(everything.class_names),
        "positive_class": everything.class_names[1],
        "threshold": threshold,
        "threshold_selection": threshold_selection,
        "preprocessing": PREPROCESSING_DESCRIPTION,
        "dataset": {
            "name": data.dataset,
            "source": "elpv-dataset (Buerhop-Lutz et al. 2018; Deitsch et al. 2019), CC BY-NC-SA 4.0"
            if data.dataset == "elpv" else str(data.data_dir),
            "images": len(everything),
            "class_counts": everything.class_counts(),
            "split": split.model_dump(),
            **({"extra": loaded.extra} if loaded.extra is not None else {}),
        },
    }  # fmt: skip


def card(
    settings: TrainSettings, loaded: Loaded, threshold: float, threshold_selection: str, selection: OutOfFold | None,
    *, test_metrics: dict, keras_test_metrics: dict, train_metrics: dict, comparison: dict | None,
    export_difference: float, training: dict,
) -> dict:
    """model.json's content for model.onnx, in the order it is written (write_metadata validates it)."""
    parts = loaded.parts
    return {
        **base_metadata(settings, loaded, threshold, threshold_selection),
        "test_metrics": test_metrics,
        "keras_test_metrics": keras_test_metrics,
        "train_metrics_inference_mode": train_metrics,
        "selection": selection.summary if selection is not None else {
            "method": "validation split" if len(parts.validation) else "none",
            "weights": "best validation loss" if len(parts.validation) else "best training loss"},
        "comparison_with_previous": comparison,
        "export": export_record(export_difference),
        "training": training,
        "versions": versions(),
        "quantization": None,
    }  # fmt: skip


def flips_threshold(threshold: float, selection: OutOfFold | None) -> float:
    """The flip-averaged file's threshold: the folds' own for it with --cv, else the plain model's."""
    if selection is not None and selection.flips_threshold is not None:
        return selection.flips_threshold
    return threshold


def flip_averaged_variant(path: Path, threshold: float, metrics: dict) -> dict:
    """The card's pointer to model.tta.onnx. Not "variants": that key lists the precision variants the
    service's PRECISION=auto chooses among."""
    return FlipAveragedVariant(file=path.name, threshold=threshold, test_accuracy=metrics["accuracy"]).model_dump()


def export_flip_averaged(model: keras.Model, onnx_path: Path, metadata: dict, test: datasets.LabelledImages,
                         threshold: float, plain_metrics: dict) -> tuple[Path, dict]:
    """model.tta.onnx + .json: the mean over the four flips folded into the graph, same signature."""
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


def final_settings(fit_recipe: FitSettings, selection: OutOfFold) -> FitSettings:
    """The frozen recipe on all non-test images, stopped where the folds said."""
    return replace(fit_recipe, keep="last", stop_after=selection.epochs)
