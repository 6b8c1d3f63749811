"""A shipped model scored as served (ONNX, inference mode) on each part of the split it recorded.

    python -m training.split_scores --model models/model.onnx

A model that scores its own training images no better than unseen ones is held back by its
training, not by its size; the model card reports both side by side.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from training import data as datasets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="split_scores", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/model.onnx"),
                        help="the ONNX model; its metadata is the .json beside it")
    args = parser.parse_args(argv)
    from training.evaluate import binary_metrics, log_loss
    from training.export import onnx_predict

    metadata_path = args.model.with_suffix(".json")
    if not metadata_path.exists():
        print(f"split_scores: {metadata_path} does not exist (train writes it beside the .onnx)", file=sys.stderr)
        return 2
    metadata = json.loads(metadata_path.read_text())
    recorded = metadata["dataset"]["split"]
    if metadata["dataset"]["name"] != "elpv":
        print("split_scores: only the ELPV split can be rebuilt from metadata", file=sys.stderr)
        return 2
    parts = datasets.split(datasets.load_elpv(), recorded["test_fraction"], recorded["validation_fraction"],
                           recorded["seed"])  # fmt: skip
    threshold = metadata["threshold"]
    print(f"{args.model}: inference mode, threshold {threshold}\n")
    print("| split | images | accuracy | log loss | ROC AUC |\n|---|---|---|---|---|")
    for name in ("train", "validation", "test"):
        images = getattr(parts, name)
        if not len(images):
            continue
        probability = onnx_predict(args.model, images.x)[:, 0]
        scores = binary_metrics(images.y, probability, threshold)
        print(f"| {name} | {len(images)} | {scores['accuracy']:.3f} | {log_loss(images.y, probability):.3f} "
              f"| {scores['roc_auc']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
