"""A shipped model scored as served (ONNX, inference mode) on each part of the split it recorded.

    python -m training.split_scores --model models/model.onnx

A model that scores its own training images no better than unseen ones is held back by its
training, not by its size; the model card reports both side by side.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from service.core.model_card import ModelCardError, card_path_for, read_model_card
from training import data as datasets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="split_scores", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/model.onnx"),
                        help="the ONNX model; its metadata is the .json beside it")
    args = parser.parse_args(argv)
    # TensorFlow takes seconds to import: after the options, so --help and a bad option answer at once.
    from training.evaluate import binary_metrics, log_loss
    from training.export import onnx_predict

    try:
        card = read_model_card(card_path_for(args.model))
        if card.dataset is None or card.dataset.name != "elpv":
            raise datasets.DataError("only the ELPV split can be rebuilt from metadata")
        parts = datasets.recorded_split(card)
    except (ModelCardError, datasets.DataError) as exc:
        print(f"split_scores: {exc}", file=sys.stderr)
        return 2
    threshold = card.threshold
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
