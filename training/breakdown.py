"""Held-out accuracy by the annotators' defect probability and by cell type, for the model card.

    python -m training.breakdown --model models/model.onnx

ELPV labels each cell with the share of experts' votes for "defective" (0, 1/3, 2/3 or 1); the binary
label cuts at 0.5. This shows where the errors sit: on clear cells or on the ones experts disagreed on.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from service.core.model_card import ModelCardError, card_path_for, read_model_card
from training import data as datasets


def accuracy_by_group(
    groups: np.ndarray, y: np.ndarray, probability: np.ndarray, threshold: float
) -> list[tuple[str, int, int]]:
    """(group, images, correct) per distinct group, in sorted group order, then 'all'."""
    correct = (probability >= threshold).astype(int) == y
    rows = [(str(g), int((groups == g).sum()), int(correct[groups == g].sum())) for g in np.unique(groups)]
    return [*rows, ("all", len(y), int(correct.sum()))]


def markdown(title: str, rows: list[tuple[str, int, int]]) -> str:
    lines = [f"| {title} | images | correct | accuracy |", "|---|---|---|---|"]
    lines += [f"| {group} | {n} | {ok} | {ok / n:.3f} |" for group, n, ok in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="breakdown", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        type=Path,
        default=Path("models/model.onnx"),
        help="the ONNX model; its metadata is the .json beside it",
    )
    args = parser.parse_args(argv)
    # TensorFlow takes seconds to import: after the options, so --help and a bad option answer at once.
    from training.export import onnx_predict

    try:
        card = read_model_card(card_path_for(args.model))
        test = datasets.held_out_test_set(card)
    except (ModelCardError, datasets.DataError) as exc:
        print(f"breakdown: {exc}", file=sys.stderr)
        return 2
    table = datasets.elpv_table()
    by_path = {str(datasets.elpv_root() / row["path"]): row for row in table}
    rows = [by_path[source] for source in test.sources]
    votes = np.array([f"{round(row['probability'] * 3)}/3" for row in rows])
    kinds = np.array([str(row["type"]) for row in rows])
    probability = onnx_predict(args.model, test.x)[:, 0]
    threshold = card.threshold
    print(f"{args.model}: held-out test set, threshold {threshold}\n")
    print(markdown("defect probability", accuracy_by_group(votes, test.y, probability, threshold)))
    print()
    print(markdown("cell type", accuracy_by_group(kinds, test.y, probability, threshold)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
