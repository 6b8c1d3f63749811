"""Which 300->100 downscale keeps the most defect signal? A proxy comparison on ELPV validation cells.

    python -m bench.downscale --epochs 10 --seeds 2

The seed CNN costs ~2 min an epoch on 2 cores, too slow to compare preprocessing variants; this fits
the same architecture with 32 filters per block (~100x cheaper) on each variant of the training split
and reports validation accuracy and ROC AUC, mean over seeds. The test split is never touched. It
only ranks variants: a winner must still be shipped in service/core/preprocessing.py and the full model
retrained, since serving and training share one preprocessing function.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter

from service.core.preprocessing import INPUT_SIZE, RESIZE_FILTER

Downscale = Callable[[Image.Image], Image.Image]

VARIANTS: dict[str, Downscale] = {
    # What service/core/preprocessing.py does: Pillow bilinear, which averages over the reduction's support.
    "bilinear (shipped)": lambda im: im.resize(INPUT_SIZE, RESIZE_FILTER),
    # Dark cracks widened to 3 px first, so the averaging keeps their contrast.
    "min-filter 3 + bilinear": lambda im: im.filter(ImageFilter.MinFilter(3)).resize(
        INPUT_SIZE, Image.Resampling.BILINEAR
    ),
    # Every third pixel: full contrast, but a 1-px crack is kept or dropped by where it falls.
    "nearest": lambda im: im.resize(INPUT_SIZE, Image.Resampling.NEAREST),
}


def fit_and_score(
    train: tuple[np.ndarray, np.ndarray], validation: tuple[np.ndarray, np.ndarray], epochs: int, seed: int
) -> tuple[float, float]:
    import keras
    from sklearn.metrics import roc_auc_score

    from training.data import LabelledImages
    from training.fit import make_dataset
    from training.model import compile_model, make_model

    keras.utils.set_random_seed(seed)
    model = compile_model(make_model(filters=(32, 32, 32)))
    data = LabelledImages(train[0], train[1], ("",) * len(train[1]), ("functional", "defective"))
    model.fit(make_dataset(data, 32, shuffle=True, augmented=True, seed=seed), epochs=epochs, verbose=0)
    probability = model.predict(validation[0], batch_size=64, verbose=0)[:, 0]
    accuracy = float(((probability >= 0.5) == validation[1]).mean())
    return accuracy, float(roc_auc_score(validation[1], probability))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.downscale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args(argv)
    from training import data as datasets

    table = datasets.elpv_table()
    root = datasets.elpv_root()
    cells = [Image.open(root / path).convert("L") for path in table["path"]]
    labels = (table["probability"] >= datasets.ELPV_DEFECT_THRESHOLD).astype(int)
    index = np.arange(len(cells))
    # The training command's split (seed 42), rebuilt on indices so each variant sees the same cells.
    ids = datasets.LabelledImages(index, labels, ("",) * len(index), datasets.ELPV_CLASS_NAMES)
    parts = datasets.split(ids, 0.25, 0.15, 42)

    print(f"{'downscale':<26} {'val accuracy':>12} {'val ROC AUC':>12} {'seconds':>8}")
    for name, downscale in VARIANTS.items():
        x = np.stack([np.asarray(downscale(cell), np.float32) for cell in cells])[..., None]
        start = time.perf_counter()
        scores = [
            fit_and_score((x[parts.train.x], labels[parts.train.x]),
                          (x[parts.validation.x], labels[parts.validation.x]), args.epochs, seed)
            for seed in range(args.seeds)
        ]  # fmt: skip
        accuracy, auc = np.mean(scores, axis=0)
        print(f"{name:<26} {accuracy:>12.3f} {auc:>12.3f} {time.perf_counter() - start:>8.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
