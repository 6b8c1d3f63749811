"""Does a cheaper JPEG draft change what the model says? The held-out ELPV cells as JPEGs, two draft scales.

    python -m bench.draft_scale [--model models/model.onnx]

Each held-out cell (the test split the model card records) is saved as a JPEG (quality 90) at its own size
(300x300) and stretched to 1920x1080, then preprocessed with the JPEG draft stopping at a minimum side of
200 px (`service.core.preprocessing.JPEG_DRAFT_MIN_SIDE` today) and at 100 px. The served variant (the
card's INT8 file where OpenVINO serves it) and fp32 score both. A draft is taken only if it changes no
held-out label and moves probabilities less than the INT8 variant already moves them from fp32 (on the
original PNG cells). Also reports one thread's decode time of each draft.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from bench.machine import describe
from service.core import preprocessing
from service.core.config import SessionSettings
from service.core.cpu import available_cpus
from service.core.engines import installed_engines, load_engine
from service.core.model_card import card_path_for, read_model_card
from service.core.preprocessing import preprocess_bytes

SIZES = {"own size (300x300)": None, "1920x1080": (1920, 1080)}
DRAFTS = (200, 100)
JPEG_QUALITY = 90


@contextlib.contextmanager
def draft_min_side(side: int) -> Iterator[None]:
    """The one preprocessing function with another draft floor, for this comparison only."""
    kept = preprocessing.JPEG_DRAFT_MIN_SIDE
    preprocessing.JPEG_DRAFT_MIN_SIDE = side  # type: ignore[misc]
    try:
        yield
    finally:
        preprocessing.JPEG_DRAFT_MIN_SIDE = kept  # type: ignore[misc]


def as_jpeg(path: str, size: tuple[int, int] | None) -> bytes:
    with Image.open(path) as image:
        image = image.convert("L")
        if size is not None:
            image = image.resize(size, Image.Resampling.BICUBIC)
        out = io.BytesIO()
        image.save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def _engine(model: Path, engine_name: str, precision: str, file: str):  # type: ignore[no-untyped-def]
    path = model.parent / file
    return load_engine(engine_name, path.read_bytes(), path, precision, available_cpus(), SessionSettings())  # type: ignore[arg-type]


def _scores(engine, x: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.concatenate([engine.run(np.ascontiguousarray(x[i : i + 32], np.float32)) for i in range(0, len(x), 32)])


def _decode_ms(payloads: list[bytes], side: int) -> float:
    with draft_min_side(side):
        for data in payloads[:3]:
            preprocess_bytes(data)
        start = time.process_time()
        for data in payloads:
            preprocess_bytes(data)
        return (time.process_time() - start) * 1000 / len(payloads)


def run(model: Path) -> dict[str, object]:
    from training.data import recorded_split  # the train extra: ELPV and scikit-learn

    card = read_model_card(card_path_for(model))
    test = recorded_split(card).test
    variants = [v for v in card.variants or [] if v.engine in installed_engines()]
    served = next((v for v in variants if v.engine == "openvino" and v.precision == "int8"), None) or variants[0]
    reference = next(v for v in variants if v.engine == served.engine and v.precision == "fp32")
    engines = {"served": _engine(model, served.engine, served.precision, served.file),
               "fp32": _engine(model, reference.engine, reference.precision, reference.file)}
    threshold = card.threshold
    int8_moves = float(np.max(np.abs(_scores(engines["served"], test.x) - _scores(engines["fp32"], test.x))))
    rows = []
    for size_name, size in SIZES.items():
        payloads = [as_jpeg(source, size) for source in test.sources]
        inputs = {}
        for side in DRAFTS:
            with draft_min_side(side):
                inputs[side] = np.stack([preprocess_bytes(data) for data in payloads])
        for name, engine in engines.items():
            p = {side: _scores(engine, inputs[side]) for side in DRAFTS}
            labels = {side: p[side] >= threshold for side in DRAFTS}
            rows.append({
                "jpeg": size_name, "model": f"{name} ({served.precision if name == 'served' else 'fp32'})",
                "labels_changed": int(np.sum(labels[DRAFTS[0]] != labels[DRAFTS[1]])),
                "max_probability_moved": float(np.max(np.abs(p[DRAFTS[0]] - p[DRAFTS[1]]))),
                "mean_probability_moved": float(np.mean(np.abs(p[DRAFTS[0]] - p[DRAFTS[1]]))),
                "accuracy": {side: float(np.mean(labels[side] == test.y.astype(bool))) for side in DRAFTS},
            })
        for side in DRAFTS:
            rows[-1].setdefault("decode_ms_one_thread", {})[side] = _decode_ms(payloads, side)  # type: ignore[index]
    passes = all(r["labels_changed"] == 0 and r["max_probability_moved"] < int8_moves for r in rows)
    return {"machine": describe(), "model": str(model), "held_out_cells": len(test), "threshold": threshold,
            "int8_max_probability_moved_from_fp32": int8_moves, "rows": rows, "passes": passes}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.draft_scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=Path("models/model.onnx"))
    args = p.parse_args(argv)
    sys.stdout.write(json.dumps(run(args.model), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
