"""`predict FOLDER` against `predict FOLDER --ray`, on the same generated folder, in one run on one machine;
with --train, a cross-validation screen (`train --cv 2 --cv-only 2`) against the same with `--ray`.

    ray start --head --num-cpus 2 --include-dashboard=false --node-ip-address 127.0.0.1 --disable-usage-stats
    python -m bench.ray_offline --images 200 --rounds 3 --address 127.0.0.1:6379
    python -m bench.ray_offline --train --images 128 --rounds 2 --address 127.0.0.1:6379

Each round runs the commands one after another (alternating, so a busy neighbour hurts both alike) and times
each whole command from the shell, start-up included, as a user waits for it. `--ray local` is also timed: the
command then starts and stops a Ray instance of its own. Every command's CSV must equal the
single-machine one (the benchmark fails otherwise).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.ray_serve import cell_png


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def class_folder(root: Path, images: int) -> Path:
    """Two classes of noisy gray cells, bright and dark, half the images each (a screen's toy data set)."""
    rng = np.random.default_rng(0)
    for name, (low, high) in {"bright": (150, 220), "dark": (30, 100)}.items():
        (root / name).mkdir(parents=True)
        for i in range(images // 2):
            pixels = np.clip(rng.uniform(low, high) + rng.normal(0, 25, (100, 100)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:04d}.png")
    return root


def train_commands(tmp: Path, images: int, address: str | None) -> dict[str, list[str]]:
    folder = class_folder(tmp / "classes", images)
    base = [sys.executable, "-m", "training", "--dataset", "folder", "--data-dir", str(folder), "--cv", "2",
            "--cv-only", "2", "--epochs", "3", "--filters", "8,8,8", "--batch-size", "16", "--seed", "0"]
    commands = {"one machine": [*base, "--out", str(tmp / "one")]}
    if address:
        commands[f"--ray {address}"] = [*base, "--out", str(tmp / "ray"), "--ray", address,
                                        "--storage", str(tmp / "storage")]
    return commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.ray_offline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", type=Path, default=Path("models/model.onnx"))
    parser.add_argument("--address", help="a running cluster's address (`ray start --head` prints it)")
    parser.add_argument("--train", action="store_true", help="time a two-fold screen instead of predict")
    args = parser.parse_args(argv)
    if args.train:
        return train(args)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for i in range(args.images):
            (folder / f"{i:05d}.png").write_bytes(cell_png(i))
        base = [sys.executable, "-m", "service.entrypoints.predict_cli", str(folder), "--model", str(args.model)]
        variants = {"one machine": [], "--ray local (own instance)": ["--ray", "local"]}
        if args.address:
            variants[f"--ray {args.address}"] = ["--ray", args.address]
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, extra in variants.items():
                out = Path(tmp) / f"{len(times[name])}-{name.replace(' ', '_').replace('/', '_')}.csv"
                times[name].append(timed([*base, "--out", str(out), *extra]))
                expected = Path(tmp) / "0-one_machine.csv"
                if out.read_text() != expected.read_text():
                    raise SystemExit(f"{name}: the CSV differs from the single-machine one")
        report(times, args.images, args.rounds)
    return 0


def train(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        commands = train_commands(Path(tmp), args.images, args.address)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, command in commands.items():
                times[name].append(timed(command))
        reports = [json.loads((Path(tmp) / out / "cv-screening.json").read_text())["out_of_fold"]["pooled"]
                   for out in ("one", "ray") if (Path(tmp) / out).exists()]
        print(f"two-fold screen, 3 epochs, {args.images} images; pooled out of fold: {reports}")
        report(times, args.images, args.rounds)
    return 0


def report(times: dict[str, list[float]], images: int, rounds: int) -> None:
    reference = statistics.median(times["one machine"])
    print(f"{images} images, {rounds} rounds, median wall time of the whole command")
    print(f"{'command':<28} {'median s':>9} {'images/s':>9} {'vs one machine':>15}   all runs (s)")
    for name, runs in times.items():
        median = statistics.median(runs)
        print(f"{name:<28} {median:>9.2f} {images / median:>9.1f} {median / reference:>14.2f}x   "
              + " ".join(f"{run:.2f}" for run in runs))


if __name__ == "__main__":
    sys.exit(main())
