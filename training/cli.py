"""`train`: fit the seed CNN, evaluate it on a held-out test set and export it to ONNX. This module parses the
command line into TrainSettings and reports errors; run() calls the steps of training/pipeline.py in order."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import shlex
import sys
from pathlib import Path

from training.environment import check_training_dependencies, missing_training_dependency, quiet_tensorflow
from training.settings import GROUPS, SettingsError, TrainSettings, filters_argument


def _threshold(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1 or 'auto', got {text!r}") from None


def _model_name(text: str) -> str:
    # It becomes a URL path segment: /v2/models/NAME/infer.
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", text):
        raise argparse.ArgumentTypeError(f"expected letters, digits, '.', '_' or '-', got {text!r}")
    return text


def _data_options(p: argparse.ArgumentParser, d: TrainSettings) -> None:
    data = p.add_argument_group("data")
    data.add_argument("--dataset", choices=("elpv", "folder"), default=d.data.dataset,
                      help="elpv: the installed elpv-dataset package; folder: --data-dir")
    data.add_argument("--data-dir", type=Path,
                      help="folder with two class subfolders (sorted; the second is the positive class unless "
                           "--positive-class names the other)")
    data.add_argument("--positive-class", metavar="NAME",
                      help="the class whose probability the model outputs (ELPV: defective; a folder: the second "
                           "subfolder in sort order)")
    data.add_argument("--validation-data", type=Path,
                      help="folder of classes used for validation instead of a split of the training data")
    data.add_argument("--extra-data", type=Path, metavar="DIR",
                      help="more images for the training part only, one subfolder per class (dataset --from-log "
                           "writes it); images equal to a test or validation image are left out; the card records it")
    data.add_argument("--test-split", type=float, default=d.data.test_split,
                      help="stratified held-out test fraction, never trained or tuned on")
    data.add_argument("--validation-split", type=float, default=d.data.validation_split,
                      help="stratified validation fraction of what the test split leaves")


def _fit_options(p: argparse.ArgumentParser, d: TrainSettings) -> None:
    fit = p.add_argument_group("fit")
    fit.add_argument("--epochs", type=int, default=d.recipe.epochs,
                     help="most epochs to run; early stopping may end sooner")
    fit.add_argument("--batch-size", type=int, default=d.recipe.batch_size, help="images per training step")
    fit.add_argument("--learning-rate", type=float, default=d.recipe.learning_rate, help="Adam's initial learning rate")
    fit.add_argument("--augment", action=argparse.BooleanOptionalAction, default=d.recipe.augment,
                     help="random horizontal and vertical flips while training")
    fit.add_argument("--quarter-turns", action=argparse.BooleanOptionalAction, default=d.recipe.quarter_turns,
                     help="also random 90-degree turns (off: ELPV busbars are horizontal)")
    fit.add_argument("--lr-schedule", choices=("plateau", "cosine"), default=d.recipe.lr_schedule,
                     help="plateau: halve the rate when validation loss stalls; cosine: decay from "
                          "--learning-rate to 1e-6 over --epochs")
    fit.add_argument("--warmup-epochs", type=int, default=d.recipe.warmup_epochs,
                     help="linear warm-up epochs before the cosine decay (--lr-schedule cosine)")
    fit.add_argument("--soft-targets", action=argparse.BooleanOptionalAction, default=d.recipe.soft_targets,
                     help="fit the annotators' defect probability (ELPV: 0, 1/3, 2/3, 1) with binary "
                          "cross-entropy instead of the 0/1 label; a folder data set has only labels")
    fit.add_argument("--ema", action=argparse.BooleanOptionalAction, default=d.recipe.ema,
                     help="keep an exponential moving average of the weights (Adam's use_ema) and end with it "
                          "(so no best-checkpoint picking or early stopping)")
    fit.add_argument("--ema-momentum", type=float, default=d.recipe.ema_momentum,
                     help="weight of the running average per step (0.995: about the last 200 steps)")
    fit.add_argument("--jitter", type=float, default=d.recipe.jitter,
                     help="brightness/contrast jitter: brightness +-J*255/2, contrast x[1-J, 1+J]; 0 = off, 0.1 mild")
    fit.add_argument("--recalibrate-batchnorm", action=argparse.BooleanOptionalAction,
                     default=d.recipe.recalibrate_batchnorm,
                     help="after the fit, measure BatchNorm statistics in inference mode on the training "
                          "images (always on with --cv)")
    fit.add_argument("--initial-weights", type=Path,
                     help="start from these weights (a best.weights.h5 of an earlier run) instead of "
                          "random ones")
    fit.add_argument("--class-weight", action=argparse.BooleanOptionalAction, default=d.recipe.class_weight,
                     help="weight classes inversely to their frequency")
    fit.add_argument("--early-stopping-patience", type=int, default=d.recipe.early_stopping_patience,
                     help="epochs without a better validation loss before stopping")
    fit.add_argument("--reduce-lr-patience", type=int, default=d.recipe.reduce_lr_patience,
                     help="epochs without a better validation loss before halving the learning rate")
    fit.add_argument("--mixed-precision", action=argparse.BooleanOptionalAction, default=d.recipe.mixed_precision,
                     help="train in mixed bfloat16 (faster on CPUs with AMX/AVX512-BF16); export stays float32")
    fit.add_argument("--seed", type=int, default=d.recipe.seed,
                     help="seeds the split, the initial weights and the shuffling")
    fit.add_argument("--resume", action="store_true",
                     help="continue from the last epoch checkpoint in --checkpoint-dir")
    fit.add_argument("--filters", type=filters_argument, default=d.recipe.filters,
                     help="filters per block, comma separated (the seed's by default; smaller for experiments)")


def _selection_options(p: argparse.ArgumentParser, d: TrainSettings) -> None:
    select = p.add_argument_group("selection")
    select.add_argument("--cv", type=int, default=d.selection.cv, metavar="K",
                        help="stratified K-fold over the non-test images: epochs and threshold chosen out of "
                             "fold, then one final fit on all of them (no validation split); 0 = off")
    select.add_argument("--cv-only", type=int, default=d.selection.cv_only, metavar="N",
                        help="screening: run only the first N folds, report their out-of-fold figures "
                             "(OUT/cv-screening.json) and stop; no final model")
    select.add_argument("--compare-with", type=Path,
                        help="an earlier model.onnx (with its .json): McNemar's test on the same held-out images")
    cluster = p.add_argument_group("cluster (with --cv; docs/ray-offline.md)")
    cluster.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                         help="run the folds as Ray tasks on the cluster at ADDRESS (`ray start --head` prints it; "
                              "none: the one on this machine, else a new local one); the final fit stays here")
    cluster.add_argument("--storage", type=Path,
                         help="with --ray: a folder every node reaches at this path, for the folds' checkpoints "
                              "(STORAGE/cv; cv_report --checkpoint-dir STORAGE reads it); default: the checkpoint dir")
    cluster.add_argument("--fold-cpus", type=float, default=d.cluster.fold_cpus,
                         help="with --ray: CPUs Ray reserves for each fold, and TensorFlow's threads in it")


def _output_options(p: argparse.ArgumentParser, d: TrainSettings) -> None:
    out = p.add_argument_group("output")
    out.add_argument("--out", type=Path, default=d.output.out, help="folder for model.onnx, model.json and plots")
    out.add_argument("--name", type=_model_name, default=d.output.name,
                     help="the model's name in its card, answers, GET /model and the /v2 routes")
    out.add_argument("--checkpoint-dir", type=Path, help="default: OUT/checkpoints")
    out.add_argument("--threshold", type=_threshold, default=d.output.threshold,
                     help="decision threshold on the positive-class probability, or 'auto': the one that "
                          "maximises validation accuracy (never chosen on the test set)")
    out.add_argument("--export-only", action="store_true",
                     help="skip fitting: evaluate and export the best checkpoint in --checkpoint-dir")
    out.add_argument("--int8", action=argparse.BooleanOptionalAction, default=d.output.int8,
                     help="also write model.int8.onnx, statically quantized and evaluated")
    out.add_argument("--tta", action=argparse.BooleanOptionalAction, default=d.output.tta,
                     help="also write model.tta.onnx: the mean over the four flips folded into the graph")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train",
        description="Fit the seed CNN, evaluate it on a held-out test set and export it to ONNX.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    defaults = TrainSettings()
    for add_options in (_data_options, _fit_options, _selection_options, _output_options):
        add_options(p, defaults)
    return p


def parse_args(argv: list[str] | None = None) -> TrainSettings:
    """The command line as TrainSettings; an invalid option or combination exits with the parser's error."""
    p = _parser()
    args = vars(p.parse_args(argv))
    groups = {
        name: group(**{f.name: args[f.name] for f in dataclasses.fields(group)}) for name, group in GROUPS.items()
    }
    # sys.argv is someone else's when main() is called with arguments.
    command = shlex.join(["train", *(sys.argv[1:] if argv is None else argv)])
    try:
        return TrainSettings(**groups, command=command)
    except SettingsError as exc:
        p.error(str(exc))


def _check_writable(folder: Path) -> None:
    # training.data loads scikit-learn (2.4 s measured), so `train --help` and a bad option do not wait for it.
    from training.data import DataError

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create output folder {folder}: {exc.strerror}") from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DataError(f"no write permission on output folder {folder}")


def run(settings: TrainSettings) -> dict:
    """The whole pipeline, one named step a line; returns the metadata it wrote."""
    _check_writable(settings.output.out)
    # TensorFlow takes seconds to import (8.3 s measured for training.export): after the argument checks, so
    # --help and bad options answer at once.
    import keras

    from training import pipeline as step
    from training.export import write_metadata

    keras.utils.set_random_seed(settings.recipe.seed)
    loaded = step.load_data(settings.data, settings.recipe.seed, cv=bool(settings.selection.cv))
    parts = loaded.parts
    if settings.recipe.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    fit_settings = step.fit_settings(settings)
    selection = None
    if settings.selection.cv:
        selection = step.cross_validate(settings, loaded, fit_settings)
        if settings.selection.cv_only:
            return _screening_report(settings, selection.summary)
        fit_settings = step.final_settings(fit_settings, selection)
        keras.utils.set_random_seed(settings.recipe.seed)
    model = step.build_model(settings.recipe)
    checkpoints = step.fit_or_load(settings, model, parts, fit_settings)
    epochs_run, throughput = step.epochs_and_throughput(checkpoints)
    model = step.float32_model(settings.recipe, model)
    step.recalibrate(settings, model, parts)
    threshold, threshold_selection = step.choose_threshold(settings.output, model, parts, selection)

    probability, test_metrics = step.keras_held_out(model, parts.test, threshold)
    train_metrics = step.inference_mode_metrics(model, parts.train, threshold)
    step.write_plots(settings.output.out, checkpoints.history, parts.test, probability, test_metrics,
                     loaded.everything.class_names)

    onnx_path = settings.output.out / "model.onnx"
    # Before the export: --compare-with may name the file this run is about to replace.
    previous = step.previous_answers(settings.selection.compare_with, parts.test)
    difference = step.export_verified(model, onnx_path, parts.test)
    onnx_probability, onnx_metrics = step.onnx_held_out(onnx_path, parts.test, threshold)
    metadata = step.card(
        settings, loaded, threshold, threshold_selection, selection,
        test_metrics=onnx_metrics, keras_test_metrics=test_metrics, train_metrics=train_metrics,
        comparison=step.compare_with_previous(previous, parts.test, onnx_probability, threshold),
        export_difference=difference,
        training=step.training_record(settings, fit_settings, epochs_run, throughput, int(model.count_params())),
    )  # fmt: skip
    if settings.output.tta:
        tta_threshold = step.flips_threshold(threshold, selection)
        tta_path, tta_metrics = step.export_flip_averaged(model, onnx_path, metadata, parts.test, tta_threshold,
                                                          onnx_metrics)
        metadata["flip_averaged_variant"] = step.flip_averaged_variant(tta_path, tta_threshold, tta_metrics)
    write_metadata(onnx_path, metadata)
    if settings.output.int8:
        step.write_int8(onnx_path, metadata, parts, threshold, onnx_probability, onnx_metrics)
    print(f"held-out test accuracy {onnx_metrics['accuracy']:.4f}, ROC AUC {onnx_metrics['roc_auc']}; "
          f"wrote {onnx_path} and {onnx_path.with_suffix('.json')}")
    return metadata


def _screening_report(settings: TrainSettings, summary: dict) -> dict:
    """--cv-only N: the folds' figures alone; no final model, nothing exported, the test split untouched."""
    path = settings.output.out / "cv-screening.json"
    report = {"command": settings.command, "out_of_fold": summary}
    path.write_text(json.dumps(report, indent=2) + "\n")
    pooled = summary["pooled"]
    print(f"out of fold ({summary['images_out_of_fold']} images, folds {summary['folds_run']}): "
          f"accuracy {pooled['accuracy']:.4f}, ROC AUC {pooled['roc_auc']:.4f}, log loss {pooled['log_loss']:.4f} "
          f"at epoch {summary['chosen_epochs']}; wrote {path}")
    return report


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        check_training_dependencies()
        # After the dependency check, so a missing package is named instead of raised from this import.
        from training.data import DataError

        quiet_tensorflow()
        run(settings)
    except ModuleNotFoundError as exc:
        if (missing := missing_training_dependency(exc)) is None:
            raise
        print(f"train: error: {missing}", file=sys.stderr)
        return 2
    except DataError as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        return 2
    except PermissionError as exc:
        print(f"train: error: no permission to write {exc.filename}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("train: interrupted; continue with --resume", file=sys.stderr)
        return 130
    except Exception as exc:
        # Imported only here: training.export loads TensorFlow.
        from training.export import ExportError

        if isinstance(exc, ExportError):
            print(f"train: error: {exc}", file=sys.stderr)
            return 1
        raise
    return 0
