"""What a cross-validation folder has measured so far, finished or not (it reads; it fits nothing).

    python -m training.cv_report --checkpoint-dir models/checkpoints/screen-hard --cv 5

Pools the out-of-fold predictions of every fold that has any (up to the epoch all of them reached)
and prints the figures `train --cv` would choose from, as JSON. The data set, --cv, --seed and split
options must be those the folder was made with (its folds.json is checked).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cv_report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint-dir", type=Path, required=True, help="the --checkpoint-dir of the train run")
    parser.add_argument("--cv", type=int, required=True)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--test-split", type=float, default=0.25)
    parser.add_argument("--dataset", choices=("elpv", "folder"), default="elpv")
    parser.add_argument("--data-dir", type=Path)
    args = parser.parse_args(argv)
    # TensorFlow takes seconds to import: after the options, so --help and a bad option answer at once.
    from training import data as datasets
    from training.crossval import fold_paths, summarize
    from training.folds import stratified_folds

    root = args.checkpoint_dir / "cv"
    try:
        # Folds depend on labels and strata only: ELPV's images need not be decoded.
        loaded = datasets.load_elpv(decode=False) if args.dataset == "elpv" else datasets.load_folder(args.data_dir)
        non_test = datasets.split(loaded, args.test_split, 0.0, args.seed).train
        folds = stratified_folds(non_test, args.cv, args.seed)
        recorded = json.loads((root / "folds.json").read_text()) if (root / "folds.json").exists() else None
        if recorded != {str(f.number): f.validation.tolist() for f in folds}:
            raise datasets.DataError(f"{root / 'folds.json'} is missing or holds other folds; pass the options "
                                     "the train run had (--cv, --seed, --test-split, --dataset)")
        numbers = [f.number for f in folds if fold_paths(root, f.number).predictions.exists()]
        summary = summarize(non_test, folds, root, numbers).summary
    except datasets.DataError as exc:
        print(f"cv_report: {exc}", file=sys.stderr)
        return 2
    summary["epochs_reached_per_fold"] = {
        n: int(np.load(fold_paths(root, n).predictions).shape[0]) for n in numbers
    }
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
