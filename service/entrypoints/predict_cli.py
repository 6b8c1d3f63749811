"""`predict PATH... --out results.csv`: classify files, folders (recursively) and globs without a server.

The images go through the same pipeline as an HTTP request (admission, decode lanes, preprocessing, pixel
limit, the served version's predictor), so an offline run answers exactly what /predict would. A file that cannot be
read or decoded gets a row with the reason and the run goes on; the exit status is 1 only when no file at all
could be classified. With `--ray [ADDRESS]` the same rows are scored on a Ray cluster
(`service.entrypoints.predict_ray`, imported only then: Ray is an optional extra).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from service.core.config import Settings
from service.core.metrics import Metrics
from service.core.model import ModelLoadError
from service.core.pipeline import Pipeline
from service.entrypoints.predict_rows import COLUMNS, Row, cannot_read, classify_bytes, expand, too_large


async def _classify_one(pipeline: Pipeline, path: Path, threshold: float | None) -> Row:
    try:
        size = path.stat().st_size
        if size > pipeline.settings.max_file_bytes:
            return Row(str(path), error=too_large(pipeline.settings.max_file_bytes))
        data = path.read_bytes()
    except OSError as exc:
        return Row(str(path), error=cannot_read(exc))
    return await classify_bytes(pipeline, str(path), path.name, data, threshold)


async def classify_paths(
    pipeline: Pipeline, found: Sequence[tuple[Path, str | None]], threshold: float | None, progress: tqdm
) -> list[Row]:
    """Rows in input order; files go in groups that fill the predictor without overflowing its admission."""
    group = max(1, min(pipeline.settings.max_queue_images, 4 * pipeline.settings.max_batch_size))
    rows: list[Row] = []
    for start in range(0, len(found), group):
        chunk = found[start : start + group]
        jobs = [
            _classify_one(pipeline, path, threshold) if why is None else _refused(path, why) for path, why in chunk
        ]
        rows.extend(await asyncio.gather(*jobs))
        progress.update(len(chunk))
    return rows


async def _refused(path: Path, why: str) -> Row:
    return Row(str(path), error=why)


async def run(settings: Settings, found: Sequence[tuple[Path, str | None]], threshold: float | None) -> list[Row]:
    pipeline = Pipeline.load(settings, Metrics())
    pipeline.warm_up()
    await pipeline.start()
    try:
        with tqdm(total=len(found), unit="image", file=sys.stderr, disable=None) as progress:
            return await classify_paths(pipeline, found, threshold, progress)
    finally:
        await pipeline.stop()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    parser.add_argument("--out", type=Path, required=True, help="the CSV to write (path, probability, label, ...)")
    parser.add_argument("--model", type=Path, help="ONNX model (default: MODEL_PATH / MODEL_DIR settings)")
    parser.add_argument("--threshold", type=float, help="decision threshold (default: THRESHOLD, else the model's)")
    parser.add_argument(
        "--ray", nargs="?", const="", metavar="ADDRESS",
        help="score on a Ray cluster (Ray Data, the ray extra): ADDRESS as `ray start --head` prints it, 'auto' "
             "for the cluster this machine belongs to, none to join or start one here; --out may end in .parquet "
             "(docs/ray-offline.md)",
    )
    args = parser.parse_args(argv)
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        parser.error(f"--threshold must lie in 0..1, not {args.threshold}")
    if args.ray and args.ray not in ("auto", "local") and ":" not in args.ray:
        # nargs="?" takes the next word: `predict --ray images/` would read the folder as the address.
        parser.error(f"--ray took {args.ray!r} as the cluster address (host:port, ray://host:port or auto); "
                     "put --ray after the paths, or write --ray=ADDRESS")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = {"model_path": args.model, "model_dir": None} if args.model else {}
    settings = Settings(**overrides)  # type: ignore[arg-type]
    if args.ray is not None:
        # Imported only here: Ray is an optional extra, and without --ray nothing of it loads.
        from service.entrypoints.predict_ray import run_on_ray

        return run_on_ray(settings, args.paths, args.threshold, args.out, args.ray or None)
    found = list(expand(args.paths))
    try:
        rows = asyncio.run(run(settings, found, args.threshold))
    except ModelLoadError as exc:
        print(f"predict: error: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        writer.writerows(row.as_csv() for row in rows)
    classified = sum(row.error is None for row in rows)
    print(f"predict: {classified} of {len(rows)} files classified; wrote {args.out}", file=sys.stderr)
    return 0 if classified else 1


if __name__ == "__main__":
    sys.exit(main())
