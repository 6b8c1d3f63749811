"""`predict FOLDER` against `predict FOLDER --ray`, on the same generated folder, in one run on one machine.

    ray start --head --num-cpus 2 --include-dashboard=false --node-ip-address 127.0.0.1 --disable-usage-stats
    python -m bench.ray_offline --images 200 --rounds 3 --address 127.0.0.1:6379

Each round runs the commands one after another (alternating, so a busy neighbour hurts both alike) and times
each whole command from the shell, start-up included, as a user waits for it. `--ray local` is also timed: the
command then starts and stops a Ray instance of its own. Every command's CSV must equal the
single-machine one (the benchmark fails otherwise).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.ray_serve import cell_png


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.ray_offline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", type=Path, default=Path("models/model.onnx"))
    parser.add_argument("--address", help="a running cluster's address (`ray start --head` prints it)")
    args = parser.parse_args(argv)
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
        reference = statistics.median(times["one machine"])
        print(f"{args.images} images, {args.rounds} rounds, median wall time of the whole command")
        print(f"{'command':<28} {'median s':>9} {'images/s':>9} {'vs one machine':>15}   all runs (s)")
        for name, runs in times.items():
            median = statistics.median(runs)
            print(f"{name:<28} {median:>9.2f} {args.images / median:>9.1f} {median / reference:>14.2f}x   "
                  + " ".join(f"{run:.2f}" for run in runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
