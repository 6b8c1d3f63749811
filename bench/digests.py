"""What the prediction log's image digest costs per file, against the digests it could use instead.

    python -m bench.digests [--seconds 1.0] [--out bench/results]

The log keeps the sha256 of every image as sent (its identity in the log, in `training.log_dataset` and in the
held-out check). This measures one thread's CPU per file of the bench's corpora for sha256 and for the
alternatives a cheaper identity could use: BLAKE2b (in hashlib), BLAKE3 and XXH3-128 when their packages are
installed (`pip install blake3 xxhash`; neither is a dependency). It decides nothing by itself: BENCHMARKS.md
weighs the figures against what a change of digest would cost the log.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
from collections.abc import Callable
from pathlib import Path

from bench.corpora import CORPUS_NAMES, load
from bench.machine import describe
from bench.timing import repeat

Digest = Callable[[bytes], str]


def available_digests() -> dict[str, Digest]:
    """name -> one file's hex digest; the optional ones only where their package imports."""
    digests: dict[str, Digest] = {
        "sha256 (the log's)": lambda data: hashlib.sha256(data).hexdigest(),
        "blake2b-256": lambda data: hashlib.blake2b(data, digest_size=32).hexdigest(),
    }
    try:
        blake3 = importlib.import_module("blake3")
        digests["blake3"] = lambda data: blake3.blake3(data).hexdigest()
    except ImportError:
        pass
    try:
        xxhash = importlib.import_module("xxhash")
        digests["xxh3-128 (not collision-resistant)"] = xxhash.xxh3_128_hexdigest
    except ImportError:
        pass
    return digests


def cpu_ms_per_file(digest: Digest, files: list[bytes], seconds: float) -> float:
    """The least of three passes of at least `seconds` each (bench.timing.repeat), in CPU milliseconds per file."""
    passes = [repeat(lambda i: digest(files[i % len(files)]), seconds, min_calls=len(files)) for _ in range(3)]
    return min(timings.cpu_ms_per() for timings in passes)


def measure(seconds: float) -> dict[str, dict[str, float]]:
    """corpus -> digest -> CPU ms per file."""
    digests = available_digests()
    return {
        corpus.name: {name: cpu_ms_per_file(digest, corpus.payloads(), seconds) for name, digest in digests.items()}
        for corpus in load(CORPUS_NAMES)
    }


def table(figures: dict[str, dict[str, float]]) -> str:
    names = list(next(iter(figures.values())))
    lines = ["| corpus | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for corpus, row in figures.items():
        lines.append(f"| {corpus} | " + " | ".join(f"{row[name]:.4f}" for name in names) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--seconds", type=float, default=1.0, help="CPU seconds per pass (three passes per figure)")
    p.add_argument("--out", type=Path, help="write digests.md and digests.json into this folder")
    args = p.parse_args(argv)
    figures = measure(args.seconds)
    machine = describe()
    sha_extensions = "sha_ni" in Path("/proc/cpuinfo").read_text().split()
    text = (
        f"# Digests, {machine['date']} on {machine['host']}\n\n{machine['cpu']}, {machine['cores_available']} cores, "
        f"ISA {', '.join(machine['isa'])}, SHA extensions {'yes' if sha_extensions else 'no'}.\n\n"
        f"One thread's CPU ms per file:\n\n{table(figures)}\n"
    )
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "digests.md").write_text(text)
        record = {"machine": machine, "sha_extensions": sha_extensions, "cpu_ms_per_file": figures}
        (args.out / "digests.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
