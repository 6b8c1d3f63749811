"""Does a cheaper JPEG draft change what the model says? The held-out ELPV cells as JPEGs, three drafts.

    python -m bench.draft_scale [--model models/model.onnx]

Each held-out cell (the test split the model card records) is saved as a JPEG (quality 90), gray and in colour
(YCbCr 4:2:0, as a camera or an image tool writes it), at its own size (300x300) and stretched to 1920x1080,
then preprocessed with three drafts: the image's own mode down to a minimum side of 200 px (the reference, the
service's draft until libjpeg's luma was taken), libjpeg's luma ("L") down to 200 px
(`service.core.preprocessing.JPEG_DRAFT_GRAY`, shipped), and the image's own mode down to 100 px (refused). The
served variant (the card's INT8 file where OpenVINO serves it) and fp32 score each. A draft is taken only if it
changes no held-out label and moves probabilities less than the INT8 variant already moves them from fp32 (on
the original PNG cells). Also reports one thread's decode time of each draft.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
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
COLOURS = ("L", "RGB")
# (minimum side, decode colour JPEGs to libjpeg's luma); the first is the reference.
DRAFTS = {"own mode, >= 200 px": (200, False), "L, >= 200 px": (200, True), "own mode, >= 100 px": (100, False)}
REFERENCE = next(iter(DRAFTS))
JPEG_QUALITY = 90


@contextlib.contextmanager
def draft(name: str) -> Iterator[None]:
    """The one preprocessing function with another draft, for this comparison only."""
    kept = preprocessing.JPEG_DRAFT_MIN_SIDE, preprocessing.JPEG_DRAFT_GRAY
    preprocessing.JPEG_DRAFT_MIN_SIDE, preprocessing.JPEG_DRAFT_GRAY = DRAFTS[name]  # type: ignore[misc]
    try:
        yield
    finally:
        preprocessing.JPEG_DRAFT_MIN_SIDE, preprocessing.JPEG_DRAFT_GRAY = kept  # type: ignore[misc]


def as_jpeg(path: str, size: tuple[int, int] | None, colour: str = "L") -> bytes:
    with Image.open(path) as image:
        image = image.convert(colour)
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


def _decode_ms(payloads: list[bytes], name: str) -> float:
    with draft(name):
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
    for (size_name, size), colour in itertools.product(SIZES.items(), COLOURS):
        payloads = [as_jpeg(source, size, colour) for source in test.sources]
        inputs = {}
        for name in DRAFTS:
            with draft(name):
                inputs[name] = np.stack([preprocess_bytes(data) for data in payloads])
        decode_ms = {name: _decode_ms(payloads, name) for name in DRAFTS}
        for name, engine in engines.items():
            p = {d: _scores(engine, inputs[d]) for d in DRAFTS}
            labels = {d: p[d] >= threshold for d in DRAFTS}
            for candidate in list(DRAFTS)[1:]:
                rows.append({
                    "jpeg": f"{colour} {size_name}", "draft": candidate,
                    "model": f"{name} ({served.precision if name == 'served' else 'fp32'})",
                    "labels_changed": int(np.sum(labels[REFERENCE] != labels[candidate])),
                    "max_probability_moved": float(np.max(np.abs(p[REFERENCE] - p[candidate]))),
                    "mean_probability_moved": float(np.mean(np.abs(p[REFERENCE] - p[candidate]))),
                    "accuracy": {d: float(np.mean(labels[d] == test.y.astype(bool))) for d in (REFERENCE, candidate)},
                    "decode_ms_one_thread": {d: decode_ms[d] for d in (REFERENCE, candidate)},
                })
    passes = {
        candidate: all(r["labels_changed"] == 0 and r["max_probability_moved"] < int8_moves
                       for r in rows if r["draft"] == candidate)
        for candidate in list(DRAFTS)[1:]
    }
    return {"machine": describe(), "model": str(model), "held_out_cells": len(test), "threshold": threshold,
            "reference": REFERENCE, "int8_max_probability_moved_from_fp32": int8_moves, "rows": rows,
            "passes": passes}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.draft_scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=Path("models/model.onnx"))
    args = p.parse_args(argv)
    sys.stdout.write(json.dumps(run(args.model), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
