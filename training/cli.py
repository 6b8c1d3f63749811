"""`train`: fit the seed CNN, evaluate it on a held-out test set and export it to ONNX."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

DEFAULT_OUT = Path("models")
# Enough for stable activation ranges; the calibrator keeps every batch's activations in memory.
CALIBRATION_IMAGES = 128


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
                      help="folder with two class subfolders (sorted; the second is the positive class)")
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
    out = p.add_argument_group("output")
    out.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for model.onnx, model.json and plots")
    out.add_argument("--checkpoint-dir", type=Path, help="default: OUT/checkpoints")
    out.add_argument("--threshold", type=_threshold, default=0.5,
                     help="decision threshold on the positive-class probability, or 'auto': the one that "
                          "maximises validation accuracy (never chosen on the test set)")
    out.add_argument("--export-only", action="store_true",
                     help="skip fitting: evaluate and export the best checkpoint in --checkpoint-dir")
    out.add_argument("--int8", action=argparse.BooleanOptionalAction, default=False,
                     help="also write model.int8.onnx, statically quantized and evaluated")
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


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for name in ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "numpy", "pillow"):
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


def run(args: argparse.Namespace) -> dict:
    """The whole pipeline; returns the metadata it wrote."""
    _check_writable(args.out)
    # Heavy imports after argument checks so --help and bad options answer at once.
    import keras

    from service.preprocessing import INPUT_SIZE, PREPROCESSING_DESCRIPTION
    from training import data as datasets
    from training.evaluate import best_threshold, binary_metrics, plot_confusion, plot_history, plot_roc
    from training.export import export_onnx, onnx_predict, sha256_of, verify_export, write_metadata
    from training.fit import CheckpointPaths, FitSettings, fit, read_history
    from training.model import compile_model, make_model

    log = logging.getLogger("train")
    keras.utils.set_random_seed(args.seed)
    loaded = datasets.load_elpv() if args.dataset == "elpv" else datasets.load_folder(args.data_dir)
    log.info("loaded %d images: %s", len(loaded), loaded.class_counts())
    if args.validation_data is not None:
        parts = datasets.split(loaded, args.test_split, 0.0, args.seed)
        validation = datasets.load_folder(args.validation_data)
        if validation.class_names != loaded.class_names:
            raise datasets.DataError(
                f"validation classes {validation.class_names} differ from {loaded.class_names}"
            )
        parts = datasets.Split(parts.train, validation, parts.test)
    else:
        parts = datasets.split(loaded, args.test_split, args.validation_split, args.seed)
    log.info("split: train %d, validation %d, test %d",
             len(parts.train), len(parts.validation), len(parts.test))

    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = compile_model(
        make_model((*INPUT_SIZE, 1), filters=args.filters), learning_rate=args.learning_rate
    )
    model.summary()
    settings = FitSettings(
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
        augment=args.augment, class_weight=args.class_weight,
        early_stopping_patience=args.early_stopping_patience,
        reduce_lr_patience=args.reduce_lr_patience, seed=args.seed, resume=args.resume,
        quarter_turns=args.quarter_turns, lr_schedule=args.lr_schedule,
    )
    checkpoints = CheckpointPaths(args.checkpoint_dir or args.out / "checkpoints")
    if args.export_only:
        if not checkpoints.best_weights.exists():
            raise datasets.DataError(f"no checkpoint to export: {checkpoints.best_weights} does not exist")
        model.load_weights(str(checkpoints.best_weights))
    else:
        if args.initial_weights is not None:
            try:
                model.load_weights(str(args.initial_weights))
            except (ValueError, OSError) as exc:
                raise datasets.DataError(f"cannot load --initial-weights {args.initial_weights}: {exc}") from exc
        fit(model, parts.train, parts.validation or None, settings, checkpoints)
    history = read_history(checkpoints.history)
    throughput = [float(row["train_images_per_s"]) for row in history if row.get("train_images_per_s")]
    if args.mixed_precision:
        # The served graph is float32: same weights, float32 arithmetic.
        keras.mixed_precision.set_global_policy("float32")
        trained = model
        model = make_model((*INPUT_SIZE, 1), filters=args.filters)
        model.set_weights(trained.get_weights())

    if args.threshold == "auto":
        if not len(parts.validation):
            raise datasets.DataError("--threshold auto needs a validation set")
        args.threshold = best_threshold(
            parts.validation.y, model.predict(parts.validation.x, batch_size=64, verbose=0)[:, 0]
        )
        args.threshold_selection = "maximises validation accuracy"
        log.info("threshold %.3f maximises validation accuracy", args.threshold)
    probability = model.predict(parts.test.x, batch_size=64, verbose=0)[:, 0]
    test_metrics = binary_metrics(parts.test.y, probability, args.threshold)
    log.info("held-out test: %s", test_metrics)
    plot_history(checkpoints.history, args.out / "training_curves.png")
    plot_roc(parts.test.y, probability, args.out / "roc_curve.png")
    plot_confusion(test_metrics["confusion_matrix"], loaded.class_names, args.out / "confusion_matrix.png")

    onnx_path = args.out / "model.onnx"
    export_onnx(model, onnx_path)
    difference = verify_export(model, onnx_path, parts.test.x[:64])
    log.info("exported %s; max |keras - onnx| = %.2e on %d held-out images",
             onnx_path, difference, min(64, len(parts.test)))
    onnx_probability = onnx_predict(onnx_path, parts.test.x)[:, 0]
    onnx_metrics = binary_metrics(parts.test.y, onnx_probability, args.threshold)

    metadata = {
        "name": "seed-cnn",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "input": {"name": "input", "shape": [None, *INPUT_SIZE, 1], "dtype": "float32"},
        "output": {"shape": [None, 1], "dtype": "float32",
                   "meaning": f"probability of class '{loaded.class_names[1]}'"},
        "class_names": list(loaded.class_names),
        "threshold": args.threshold,
        "threshold_selection": getattr(args, "threshold_selection", "fixed by --threshold"),
        "preprocessing": PREPROCESSING_DESCRIPTION,
        "dataset": {
            "name": args.dataset,
            "source": "elpv-dataset (Buerhop-Lutz et al. 2018; Deitsch et al. 2019), CC BY-NC-SA 4.0"
            if args.dataset == "elpv" else str(args.data_dir),
            "images": len(loaded),
            "class_counts": loaded.class_counts(),
            "split": {"train": len(parts.train), "validation": len(parts.validation),
                      "test": len(parts.test), "test_fraction": args.test_split,
                      "validation_fraction": args.validation_split, "seed": args.seed,
                      "stratified": True},
        },
        "test_metrics": onnx_metrics,
        "keras_test_metrics": test_metrics,
        "export": {"tool": "tf2onnx.convert.from_function", "opset": 17,
                   "max_abs_difference_vs_keras": difference, "tolerance": 1e-4},
        "training": {
            "epochs_requested": args.epochs, "epochs_run": len(history),
            "batch_size": args.batch_size, "learning_rate": args.learning_rate,
            "optimizer": "adam", "loss": "binary_crossentropy",
            "augment": args.augment, "quarter_turns": args.quarter_turns,
            "lr_schedule": args.lr_schedule, "class_weight": args.class_weight,
            "initial_weights": None if args.initial_weights is None else {
                "file": str(args.initial_weights), "sha256": sha256_of(args.initial_weights)},
            "early_stopping_patience": args.early_stopping_patience,
            "reduce_lr_patience": args.reduce_lr_patience, "mixed_precision": args.mixed_precision,
            "filters": list(args.filters), "parameters": int(model.count_params()),
            "images_per_s_per_epoch": [round(v, 2) for v in throughput],
            "command": args.command,
        },
        "versions": _versions(),
        "quantization": None,
    }
    write_metadata(onnx_path, metadata)
    if args.int8:
        from training.quantize import quantize_int8

        int8_path = args.out / "model.int8.onnx"
        quantize_int8(onnx_path, int8_path, parts.train.x[: min(CALIBRATION_IMAGES, len(parts.train))])
        int8_probability = onnx_predict(int8_path, parts.test.x)[:, 0]
        int8_metrics = binary_metrics(parts.test.y, int8_probability, args.threshold)
        changed = int(((int8_probability >= args.threshold)
                       != (onnx_probability >= args.threshold)).sum())
        write_metadata(int8_path, {
            **metadata, "test_metrics": int8_metrics,
            "quantization": {"method": "onnxruntime static QDQ, per-channel, U8 activations, S8 weights",
                             "calibration_images": min(CALIBRATION_IMAGES, len(parts.train)),
                             "fp32_test_accuracy": onnx_metrics["accuracy"],
                             "labels_changed_vs_fp32": changed},
        })
        log.info("int8 held-out accuracy %.4f (fp32 %.4f), %d labels changed",
                 int8_metrics["accuracy"], onnx_metrics["accuracy"], changed)
    print(f"held-out test accuracy {onnx_metrics['accuracy']:.4f}, ROC AUC {onnx_metrics['roc_auc']}; "
          f"wrote {onnx_path} and {onnx_path.with_suffix('.json')}")
    return metadata


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from training.data import DataError

    try:
        run(args)
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
