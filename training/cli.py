"""`train`: fit the seed CNN, evaluate it on a held-out test set and export it to ONNX."""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import sys
from pathlib import Path

from training.environment import check_training_dependencies, missing_training_dependency, quiet_tensorflow

DEFAULT_OUT = Path("models")
log = logging.getLogger("train")


def _filters(text: str) -> tuple[int, ...]:
    """'8,16,32' -> (8, 16, 32); at most three blocks fit a 100x100 input."""
    try:
        counts = tuple(int(v) for v in text.split(","))
    except ValueError:
        counts = ()
    if not 1 <= len(counts) <= 3 or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected 1 to 3 positive integers separated by commas, got {text!r}")
    return counts


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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="train",
        description="Fit the seed CNN, evaluate it on a held-out test set and export it to ONNX.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = p.add_argument_group("data")
    data.add_argument("--dataset", choices=("elpv", "folder"), default="elpv",
                      help="elpv: the installed elpv-dataset package; folder: --data-dir")
    data.add_argument("--data-dir", type=Path,
                      help="folder with two class subfolders (sorted; the second is the positive class unless "
                           "--positive-class names the other)")
    data.add_argument("--positive-class", metavar="NAME",
                      help="the class whose probability the model outputs (ELPV: defective; a folder: the second "
                           "subfolder in sort order)")
    data.add_argument("--validation-data", type=Path,
                      help="folder of classes used for validation instead of a split of the training data")
    data.add_argument("--test-split", type=float, default=0.25,
                      help="stratified held-out test fraction, never trained or tuned on")
    data.add_argument("--validation-split", type=float, default=0.15,
                      help="stratified validation fraction of what the test split leaves")
    fit = p.add_argument_group("fit")
    fit.add_argument("--epochs", type=int, default=40, help="most epochs to run; early stopping may end sooner")
    fit.add_argument("--batch-size", type=int, default=32, help="images per training step")
    fit.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's initial learning rate")
    fit.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                     help="random horizontal and vertical flips while training")
    fit.add_argument("--quarter-turns", action=argparse.BooleanOptionalAction, default=False,
                     help="also random 90-degree turns (off: ELPV busbars are horizontal)")
    fit.add_argument("--lr-schedule", choices=("plateau", "cosine"), default="plateau",
                     help="plateau: halve the rate when validation loss stalls; cosine: decay from "
                          "--learning-rate to 1e-6 over --epochs")
    fit.add_argument("--warmup-epochs", type=int, default=0,
                     help="linear warm-up epochs before the cosine decay (--lr-schedule cosine)")
    fit.add_argument("--soft-targets", action=argparse.BooleanOptionalAction, default=False,
                     help="fit the annotators' defect probability (ELPV: 0, 1/3, 2/3, 1) with binary "
                          "cross-entropy instead of the 0/1 label; a folder data set has only labels")
    fit.add_argument("--ema", action=argparse.BooleanOptionalAction, default=False,
                     help="keep an exponential moving average of the weights (Adam's use_ema) and end with it "
                          "(so no best-checkpoint picking or early stopping)")
    fit.add_argument("--ema-momentum", type=float, default=0.995,
                     help="weight of the running average per step (0.995: about the last 200 steps)")
    fit.add_argument("--jitter", type=float, default=0.0,
                     help="brightness/contrast jitter: brightness +-J*255/2, contrast x[1-J, 1+J]; 0 = off, 0.1 mild")
    fit.add_argument("--recalibrate-batchnorm", action=argparse.BooleanOptionalAction, default=False,
                     help="after the fit, measure BatchNorm statistics in inference mode on the training "
                          "images (always on with --cv)")
    fit.add_argument("--initial-weights", type=Path,
                     help="start from these weights (a best.weights.h5 of an earlier run) instead of "
                          "random ones")
    fit.add_argument("--class-weight", action=argparse.BooleanOptionalAction, default=False,
                     help="weight classes inversely to their frequency")
    fit.add_argument("--early-stopping-patience", type=int, default=10,
                     help="epochs without a better validation loss before stopping")
    fit.add_argument("--reduce-lr-patience", type=int, default=4,
                     help="epochs without a better validation loss before halving the learning rate")
    fit.add_argument("--mixed-precision", action=argparse.BooleanOptionalAction, default=False,
                     help="train in mixed bfloat16 (faster on CPUs with AMX/AVX512-BF16); export stays float32")
    fit.add_argument("--seed", type=int, default=42, help="seeds the split, the initial weights and the shuffling")
    fit.add_argument("--resume", action="store_true",
                     help="continue from the last epoch checkpoint in --checkpoint-dir")
    fit.add_argument("--filters", type=_filters,
                     default=(512, 256, 128),
                     help="filters per block, comma separated (the seed's by default; smaller for experiments)")
    select = p.add_argument_group("selection")
    select.add_argument("--cv", type=int, default=0, metavar="K",
                        help="stratified K-fold over the non-test images: epochs and threshold chosen out of "
                             "fold, then one final fit on all of them (no validation split); 0 = off")
    select.add_argument("--cv-only", type=int, default=None, metavar="N",
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
    cluster.add_argument("--fold-cpus", type=float, default=1.0,
                         help="with --ray: CPUs Ray reserves for each fold, and TensorFlow's threads in it")
    out = p.add_argument_group("output")
    out.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for model.onnx, model.json and plots")
    out.add_argument("--name", type=_model_name, default="seed-cnn",
                     help="the model's name in its card, answers, GET /model and the /v2 routes")
    out.add_argument("--checkpoint-dir", type=Path, help="default: OUT/checkpoints")
    out.add_argument("--threshold", type=_threshold, default=0.5,
                     help="decision threshold on the positive-class probability, or 'auto': the one that "
                          "maximises validation accuracy (never chosen on the test set)")
    out.add_argument("--export-only", action="store_true",
                     help="skip fitting: evaluate and export the best checkpoint in --checkpoint-dir")
    out.add_argument("--int8", action=argparse.BooleanOptionalAction, default=False,
                     help="also write model.int8.onnx, statically quantized and evaluated")
    out.add_argument("--tta", action=argparse.BooleanOptionalAction, default=False,
                     help="also write model.tta.onnx: the mean over the four flips folded into the graph")
    args = p.parse_args(argv)
    # Recorded in the metadata; sys.argv is someone else's when main() is called with arguments.
    args.command = shlex.join(["train", *(sys.argv[1:] if argv is None else argv)])
    if args.dataset == "folder" and args.data_dir is None:
        p.error("--dataset folder needs --data-dir")
    if not 0 < args.test_split < 1:
        p.error("--test-split must be between 0 and 1")
    if not 0 <= args.validation_split < 1:
        p.error("--validation-split must be in [0, 1)")
    if args.epochs < 1 or args.batch_size < 1:
        p.error("--epochs and --batch-size must be positive")
    if args.threshold != "auto" and not 0 < args.threshold < 1:
        p.error("--threshold must be between 0 and 1, or auto")
    if args.cv == 1 or args.cv < 0:
        p.error("--cv needs at least 2 folds (0 turns it off)")
    if args.cv_only is not None and not (args.cv and 1 <= args.cv_only <= args.cv):
        p.error("--cv-only needs --cv K and a count between 1 and K")
    if args.ray is not None and not args.cv:
        p.error("--ray runs cross-validation folds: it needs --cv K")
    if args.ray is None and (args.storage is not None or args.fold_cpus != 1.0):
        p.error("--storage and --fold-cpus go with --ray")
    if args.fold_cpus <= 0:
        p.error("--fold-cpus must be positive")
    if not 0 <= args.jitter < 1:
        p.error("--jitter must be in [0, 1)")
    if not 0 < args.ema_momentum < 1:
        p.error("--ema-momentum must be between 0 and 1")
    if args.warmup_epochs < 0 or args.warmup_epochs >= args.epochs:
        p.error("--warmup-epochs must be at least 0 and fewer than --epochs")
    if args.compare_with is not None and not args.compare_with.is_file():
        p.error(f"--compare-with {args.compare_with} is not a file")
    if args.initial_weights is not None and not args.initial_weights.is_file():
        p.error(f"--initial-weights {args.initial_weights} is not a file")
    return args


def _check_writable(folder: Path) -> None:
    from training.data import DataError

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create output folder {folder}: {exc.strerror}") from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DataError(f"no write permission on output folder {folder}")


def run(args: argparse.Namespace) -> dict:
    """The whole pipeline, one named step a line; returns the metadata it wrote."""
    _check_writable(args.out)
    # Heavy imports after argument checks so --help and bad options answer at once.
    import keras

    from training import pipeline as step
    from training.evaluate import binary_metrics
    from training.export import onnx_predict, write_metadata
    from training.fit import read_history

    keras.utils.set_random_seed(args.seed)
    loaded = step.load_data(args)
    parts = loaded.parts
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    settings = step.fit_settings(args)
    selection = None
    if args.cv:
        selection = step.cross_validate(args, loaded, settings)
        if args.cv_only:
            return _screening_report(args, selection.summary)
        settings = step.final_settings(settings, selection)
        keras.utils.set_random_seed(args.seed)
    model = step.build_model(args)
    checkpoints = step.fit_or_load(args, model, parts, settings)
    history = read_history(checkpoints.history)
    throughput = [float(row["train_images_per_s"]) for row in history if row.get("train_images_per_s")]
    model = step.float32_model(args, model)
    step.recalibrate(args, model, parts)
    threshold, threshold_selection = step.choose_threshold(args, model, parts, selection)

    probability = model.predict(parts.test.x, batch_size=64, verbose=0)[:, 0]
    test_metrics = binary_metrics(parts.test.y, probability, threshold)
    log.info("held-out test: %s", test_metrics)
    train_metrics = step.inference_mode_metrics(model, parts.train, threshold)
    step.write_plots(args.out, checkpoints.history, parts.test, probability, test_metrics,
                     loaded.everything.class_names)

    onnx_path = args.out / "model.onnx"
    # Before the export: --compare-with may name the file this run is about to replace.
    previous = step.previous_answers(args.compare_with, parts.test)
    difference = step.export_verified(model, onnx_path, parts.test)
    onnx_probability = onnx_predict(onnx_path, parts.test.x)[:, 0]
    onnx_metrics = step.with_interval(binary_metrics(parts.test.y, onnx_probability, threshold))
    comparison = step.compare_with_previous(previous, parts.test, onnx_probability, threshold)
    metadata = {
        **step.base_metadata(args, loaded, threshold, threshold_selection),
        "test_metrics": onnx_metrics,
        "keras_test_metrics": test_metrics,
        "train_metrics_inference_mode": train_metrics,
        "selection": selection.summary if selection is not None else {
            "method": "validation split" if len(parts.validation) else "none",
            "weights": "best validation loss" if len(parts.validation) else "best training loss"},
        "comparison_with_previous": comparison,
        "export": {"tool": "tf2onnx.convert.from_function", "opset": 17,
                   "max_abs_difference_vs_keras": difference, "tolerance": 1e-4},
        "training": step.training_record(args, settings, len(history), throughput, int(model.count_params())),
        "versions": step.versions(),
        "quantization": None,
    }  # fmt: skip
    if args.tta:
        tta_threshold = threshold
        if selection is not None and selection.flips_threshold is not None:
            tta_threshold = selection.flips_threshold
        tta_path, tta_metrics = step.export_flip_averaged(model, onnx_path, metadata, parts.test, tta_threshold,
                                                          onnx_metrics)
        # Not "variants": that key lists the precision variants the service's PRECISION=auto chooses among.
        metadata["flip_averaged_variant"] = {"file": tta_path.name, "threshold": tta_threshold,
                                             "test_accuracy": tta_metrics["accuracy"]}
    write_metadata(onnx_path, metadata)
    if args.int8:
        step.write_int8(onnx_path, metadata, parts, threshold, onnx_probability, onnx_metrics)
    print(f"held-out test accuracy {onnx_metrics['accuracy']:.4f}, ROC AUC {onnx_metrics['roc_auc']}; "
          f"wrote {onnx_path} and {onnx_path.with_suffix('.json')}")
    return metadata


def _screening_report(args: argparse.Namespace, summary: dict) -> dict:
    """--cv-only N: the folds' figures alone; no final model, nothing exported, the test split untouched."""
    import json

    path = args.out / "cv-screening.json"
    report = {"command": args.command, "out_of_fold": summary}
    path.write_text(json.dumps(report, indent=2) + "\n")
    pooled = summary["pooled"]
    print(f"out of fold ({summary['images_out_of_fold']} images, folds {summary['folds_run']}): "
          f"accuracy {pooled['accuracy']:.4f}, ROC AUC {pooled['roc_auc']:.4f}, log loss {pooled['log_loss']:.4f} "
          f"at epoch {summary['chosen_epochs']}; wrote {path}")
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        check_training_dependencies()
        from training.data import DataError

        quiet_tensorflow()
        run(args)
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
        from training.export import ExportError

        if isinstance(exc, ExportError):
            print(f"train: error: {exc}", file=sys.stderr)
            return 1
        raise
    return 0
