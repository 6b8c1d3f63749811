"""Precision variants of an exported model, each measured on the held-out set and recorded in its card.

    python -m training.variants --model models/model.onnx                   # ELPV: rebuilds its test split
    python -m training.variants --model my/model.onnx --data-dir my/images  # a folder-trained model

For every engine installed (onnxruntime; OpenVINO with the openvino extra) and every precision it runs
(fp32; INT8 from the static QDQ file beside the model, made with training.quantize when missing; bf16,
OpenVINO's runtime choice on the fp32 file) it records in `<model>.json` under `variants`: held-out
accuracy and ROC AUC at the card's threshold, the largest probability difference from onnxruntime fp32,
and images/s at batch 8 on this machine. The service's PRECISION=auto serves from that list
(service.core.engines.selection); nothing here is ELPV-specific beyond rebuilding ELPV's split by default.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import time
from pathlib import Path

import numpy as np

from service.core.config import SessionSettings
from service.core.cpu import available_cpus
from service.core.engines import detect, installed_engines, load_engine
from service.core.engines.base import Engine, ModelLoadError, Precision
from service.core.engines.selection import ENGINE_PRECISIONS
from service.core.model_card import card_path_for, read_model_card, update_model_card
from training import data as datasets
from training.evaluate import binary_metrics

log = logging.getLogger("training.variants")
CALIBRATION_IMAGES = 128
BATCH = 32
SPEED_BATCH = 8


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.variants", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=Path("models/model.onnx"), help="the fp32 .onnx, its card beside it")
    p.add_argument("--int8-model", type=Path, help="default: <model>.int8.onnx beside --model (made when missing)")
    p.add_argument("--data-dir", type=Path,
                   help="the folder the model was trained on (two class subfolders): its split is rebuilt from the "
                        "card's test_fraction and seed; default: the ELPV data set when the card names it")
    p.add_argument("--no-quantize", action="store_true", help="do not make a missing INT8 file (needs TensorFlow)")
    p.add_argument("--speed-seconds", type=float, default=3.0, help="timing per variant at batch 8; 0 skips it")
    return p.parse_args(argv)


def predict_all(engine: Engine, x: np.ndarray) -> np.ndarray:
    return np.concatenate([engine.run(x[i : i + BATCH].astype(np.float32)) for i in range(0, len(x), BATCH)])


def images_per_s(engine: Engine, x: np.ndarray, seconds: float) -> float | None:
    if seconds <= 0:
        return None
    batch = np.ascontiguousarray(x[:SPEED_BATCH], dtype=np.float32)
    engine.run(batch)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        engine.run(batch)
        calls += 1
    return round(calls * len(batch) / (time.perf_counter() - start), 1)


def ensure_int8(args: argparse.Namespace, train_x: np.ndarray) -> Path | None:
    path = args.int8_model or args.model.with_name(args.model.stem + ".int8.onnx")
    if path.is_file() or args.no_quantize:
        return path if path.is_file() else None
    from training.quantize import quantize_int8  # imports TensorFlow through training.export

    log.info("quantizing %s -> %s on %d training images", args.model, path, min(CALIBRATION_IMAGES, len(train_x)))
    quantize_int8(args.model, path, train_x[:CALIBRATION_IMAGES])
    return path


def measure(args: argparse.Namespace) -> list[dict[str, object]]:
    card = read_model_card(card_path_for(args.model))
    parts = datasets.recorded_split(card, args.data_dir)
    test = parts.test
    int8 = ensure_int8(args, parts.train.x)
    files: dict[Precision, Path] = {"fp32": args.model, "bf16": args.model}
    if int8 is not None:
        files["int8"] = int8
    reference: np.ndarray | None = None
    variants = []
    for engine_name in installed_engines():  # onnxruntime first: its fp32 is the reference
        for precision in ENGINE_PRECISIONS[engine_name]:
            path = files.get(precision)
            if path is None:
                continue
            data = path.read_bytes()
            try:
                engine = load_engine(engine_name, data, path, precision, available_cpus(), SessionSettings())
            except ModelLoadError as exc:
                log.warning("%s %s: %s", engine_name, precision, exc)
                continue
            probability = predict_all(engine, test.x)
            if reference is None:
                reference = probability
            metrics = binary_metrics(test.y, probability, card.threshold)
            variants.append({
                "engine": engine_name, "precision": precision, "file": path.name,
                "sha256": hashlib.sha256(data).hexdigest(), "accuracy": metrics["accuracy"],
                "roc_auc": metrics["roc_auc"],
                "max_probability_difference": float(np.max(np.abs(probability - reference))),
                "images": len(test), "images_per_s": images_per_s(engine, test.x, args.speed_seconds),
            })
            log.info("%-11s %-4s accuracy %.4f  AUC %s  max |dp| %.2e  %s images/s", engine_name, precision,
                     metrics["accuracy"], metrics["roc_auc"], variants[-1]["max_probability_difference"],
                     variants[-1]["images_per_s"])
    return variants


def record(model: Path, variants: list[dict[str, object]]) -> Path:
    """Adds `variants` to the card as written (every other field kept as it is), validated before writing."""
    path = card_path_for(model)
    measured_on = {"cpu": detect().describe(), "threads": available_cpus()}
    update_model_card(path, variants=variants, variants_measured_on=measured_on)
    return path


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    try:
        variants = measure(args)
    except (datasets.DataError, OSError) as exc:
        print(f"variants: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(variants)} variants to {record(args.model, variants)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
