"""`explain IMAGE... --out DIR`: occlusion-map PNGs offline, from the ONNX model, without a server.

The model is assembled as the server assembles it (service.core.assembly): MODEL_PATH or MODEL_DIR, ENGINE,
PRECISION, FLIP_AVERAGED and THRESHOLD from the environment; `--model` overrides the file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from service.core.assembly import load_classifier, model_source
from service.core.config import Settings
from service.core.explain import DEFAULT_PATCH, DEFAULT_STRIDE, OcclusionGrid, OcclusionParameterError, explain_with
from service.core.explain_render import SCALE, render_png
from service.core.model import ModelLoadError
from service.core.preprocessing import DEFAULT_MAX_PIXELS, ImageError, preprocess_bytes
from service.core.versions import ModelSource

# Offline there is no queue to protect; this only stops a typo (stride 1) from running for minutes.
MAX_OCCLUSIONS = 2_500


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="explain", description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    parser.add_argument("--out", type=Path, required=True, help="folder for IMAGE-stem.explain.png files")
    parser.add_argument("--model", type=Path, help="ONNX model, its card beside it (default: MODEL_PATH, else the "
                        "model installed with the package)")
    parser.add_argument("--patch", type=int, default=DEFAULT_PATCH, help="gray patch side in input pixels")
    parser.add_argument("--stride", type=int, default=DEFAULT_STRIDE, help="step between patches in input pixels")
    parser.add_argument("--scale", type=int, default=SCALE, choices=range(1, 9), metavar="1-8", help="upscaling")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        grid = OcclusionGrid.checked(args.patch, args.stride, MAX_OCCLUSIONS)
        settings = Settings()
        source = ModelSource(args.model, None) if args.model is not None else model_source(settings)
        classifier = load_classifier(source, settings)
    except (OcclusionParameterError, ModelLoadError, ValidationError) as exc:
        print(f"explain: {exc}", file=sys.stderr)
        return 2
    card = classifier.metadata
    threshold = card.threshold if settings.threshold is None else settings.threshold
    args.out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for path in args.images:
        try:
            image = preprocess_bytes(path.read_bytes(), settings.max_pixels or DEFAULT_MAX_PIXELS)
        except (OSError, ImageError) as exc:
            print(f"explain: {path}: {exc}", file=sys.stderr)
            failed += 1
            continue
        result = explain_with(classifier.predict, image, grid, threshold, card.class_names)
        target = args.out / f"{path.stem}.explain.png"
        target.write_bytes(render_png(result, threshold, args.scale))
        row, column = result.strongest
        print(f"{path}: {result.label} p={result.probability:.4f}, strongest evidence at row {row} column "
              f"{column} (drop {result.drops[row, column]:+.4f}) -> {target}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
