"""Cheap checks before long runs: can the model fit a few hundred training images, and does Keras'
training-mode figure match what the same weights score in inference mode?

    python -m training.diagnose --images 256 --epochs 12 --no-augment --mixed-precision

Per epoch it prints Keras' training-mode loss/accuracy (dropout on, batch statistics, averaged over
the epoch while the weights move), then the same images scored in inference mode (moving
statistics, no dropout) and the validation split in inference mode. A model that cannot drive the
first two near zero loss on a few hundred un-augmented images is held back by its training, not by
its size; a gap between them points at BatchNormalization's moving statistics.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np


def _stratified_subset(y: np.ndarray, count: int, seed: int) -> np.ndarray:
    # scikit-learn takes seconds to import; main() calls this after --help could have answered.
    from sklearn.model_selection import train_test_split

    if count >= len(y):
        return np.arange(len(y))
    chosen, _ = train_test_split(np.arange(len(y)), train_size=count, stratify=y, random_state=seed)
    return np.sort(chosen)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="diagnose", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256, help="training images to fit (stratified subset)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--mixed-precision", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--batchnorm-momentum", type=float, default=None,
                        help="override BatchNormalization's momentum (Keras default 0.99)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, help="also write the per-epoch figures here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # TensorFlow takes seconds to import: after the options, so --help and a bad option answer at once.
    import keras

    from training import data as datasets
    from training.batchnorm import recalibrate_batchnorm
    from training.fit import make_dataset
    from training.model import compile_model, make_model

    keras.utils.set_random_seed(args.seed)
    parts = datasets.split(datasets.load_elpv(), 0.25, 0.15, args.seed)  # the shipped split; test untouched
    train = parts.train.subset(_stratified_subset(parts.train.y, args.images, args.seed))
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = make_model()
    if args.batchnorm_momentum is not None:
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = args.batchnorm_momentum
    compile_model(model, learning_rate=args.learning_rate)
    rows: list[dict] = []

    class InferenceMode(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs or {}
            fitted = model.evaluate(train.x, train.y, batch_size=64, verbose=0, return_dict=True)
            held = model.evaluate(parts.validation.x, parts.validation.y, batch_size=64, verbose=0, return_dict=True)
            row = {"epoch": epoch + 1,
                   "train_mode_loss": logs["loss"], "train_mode_accuracy": logs["accuracy"],
                   "inference_train_loss": fitted["loss"], "inference_train_accuracy": fitted["accuracy"],
                   "inference_validation_loss": held["loss"], "inference_validation_accuracy": held["accuracy"]}
            rows.append(row)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)

    model.fit(
        make_dataset(train, args.batch_size, shuffle=True, augmented=args.augment, seed=args.seed),
        epochs=args.epochs, callbacks=[InferenceMode()], verbose=2,
    )
    if args.mixed_precision:
        # The served graph is float32: are the bfloat16-trained weights scored the same in float32?
        keras.mixed_precision.set_global_policy("float32")
        fp32 = compile_model(make_model())
        fp32.set_weights(model.get_weights())
        scored = fp32.evaluate(train.x, train.y, batch_size=64, verbose=0, return_dict=True)
        print(json.dumps({"float32_inference_train_loss": round(scored["loss"], 4),
                          "float32_inference_train_accuracy": round(scored["accuracy"], 4)}), flush=True)
        rows.append({"float32_inference_train": scored})
    # Same weights, BatchNorm statistics measured in inference mode on the fitted images.
    recalibrate_batchnorm(model, train.x)
    fitted = model.evaluate(train.x, train.y, batch_size=64, verbose=0, return_dict=True)
    held = model.evaluate(parts.validation.x, parts.validation.y, batch_size=64, verbose=0, return_dict=True)
    recalibrated = {"recalibrated_inference_train_loss": fitted["loss"],
                    "recalibrated_inference_train_accuracy": fitted["accuracy"],
                    "recalibrated_inference_validation_loss": held["loss"],
                    "recalibrated_inference_validation_accuracy": held["accuracy"]}
    print(json.dumps({k: round(v, 4) for k, v in recalibrated.items()}), flush=True)
    rows.append(recalibrated)
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "epochs": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
