"""Here, before a run on the accelerator: the ELPV non-test split as arrays, and the wheels the accelerator lacks.

    python -m training.accelerator.prepare              # -> build/accelerator/{elpv.npz, wheels/}

The split is the card's (models/model.json: test fraction, seed; training.data.split), each image through the
service's own preprocessing, the folds training.folds makes for `train --cv 5` with the same seed. The test
split is not written. The wheels are those Keras 3 needs and the accelerator's image lacks (it has JAX, NumPy,
h5py, ml-dtypes, absl-py, rich, packaging, scikit-learn; not keras, namex or optree), downloaded for its
Python with `pip download --no-deps`; build/ is git-ignored, and the whole folder travels with `run`'s carry,
so it is kept well under the 64 MiB the device tool carries.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from training.accelerator.arrays import write_arrays

log = logging.getLogger("training.accelerator.prepare")
DEFAULT_DIR = Path("build/accelerator")
CARRY_LIMIT_BYTES = 64 * 1024 * 1024
# Kept under half the carry limit: the working tree travels in the same 64 MiB.
SIZE_LIMIT_BYTES = CARRY_LIMIT_BYTES // 2
# The accelerator's Python (docs/accelerator.md): pip matches binary wheels (optree) to it exactly.
DEVICE_PYTHON = "3.12"
DEVICE_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                    "manylinux2014_x86_64")  # fmt: skip
# Keras 3's requirements the accelerator's image does not have, at the versions installed here (so the
# search runs there on the Keras the tests ran here).
MISSING_THERE = ("keras", "namex", "optree")
# What its image has of what keras and the search need (the device tool's package list, read 2026-11-17).
THERE_ALREADY = frozenset({"absl-py", "numpy", "rich", "h5py", "ml-dtypes", "packaging", "typing-extensions",
                           "scikit-learn", "matplotlib", "jax", "jaxlib"})  # fmt: skip


def write_elpv(path: Path, folds: int, seed: int, test_fraction: float) -> str:
    """The ELPV split minus its test part, with each image's fold; returns the file's sha256."""
    from service.core.preprocessing import PREPROCESSING_DESCRIPTION
    from training.data import load_elpv, split
    from training.folds import stratified_folds

    data = load_elpv()
    non_test = split(data, test_fraction, 0.0, seed).train
    chosen = stratified_folds(non_test, folds, seed)
    meta = {"dataset": "elpv", "test_fraction": test_fraction, "seed": seed, "folds_seed": seed,
            "non_test_images": len(non_test), "test_images_not_included": len(data) - len(non_test),
            "preprocessing": PREPROCESSING_DESCRIPTION,
            "made_by": "python -m training.accelerator.prepare"}  # fmt: skip
    return write_arrays(path, non_test, chosen, meta)


def download_wheels(folder: Path, names: tuple[str, ...] = MISSING_THERE) -> list[Path]:
    """`pip download --no-deps` of each, pinned to the version installed here, for the accelerator's Python."""
    folder.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={version(name)}" for name in names]
    platforms = [arg for p in DEVICE_PLATFORMS for arg in ("--platform", p)]
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        DEVICE_PYTHON,
        "--implementation",
        "cp",
        *platforms,
        "-d",
        str(folder),
        *pins,
    ]
    subprocess.run(command, check=True)
    return sorted(folder.glob("*.whl"))


def total_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.accelerator.prepare", description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="where elpv.npz and wheels/ go (git-ignored)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=42, help="the card's split seed (models/model.json)")
    p.add_argument("--test-split", type=float, default=0.25, help="the card's test fraction")
    p.add_argument("--no-wheels", action="store_true", help="only the arrays")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    digest = write_elpv(args.dir / "elpv.npz", args.folds, args.seed, args.test_split)
    log.info(
        "wrote %s (sha256 %s, %.1f MiB)",
        args.dir / "elpv.npz",
        digest[:12],
        (args.dir / "elpv.npz").stat().st_size / 2**20,
    )
    if not args.no_wheels:
        for wheel in download_wheels(args.dir / "wheels"):
            log.info("wheel %s (%.1f MiB)", wheel.name, wheel.stat().st_size / 2**20)
    size = total_bytes(args.dir)
    log.info(
        "%s holds %.1f MiB (carry limit %d MiB with the working tree)",
        args.dir,
        size / 2**20,
        CARRY_LIMIT_BYTES // 2**20,
    )
    if size > SIZE_LIMIT_BYTES:
        print(
            f"prepare: {args.dir} holds {size / 2**20:.1f} MiB, over {SIZE_LIMIT_BYTES // 2**20} MiB; "
            "delete stale files there and run it again",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
