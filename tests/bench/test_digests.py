"""bench.digests: the log's digest is the one the log writes, and every figure is a positive time."""

from __future__ import annotations

import hashlib

from bench.digests import available_digests, cpu_ms_per_file, table
from service.core.quality.records import ImageFacts


def test_the_first_digest_is_the_one_the_prediction_log_keeps() -> None:
    name, digest = next(iter(available_digests().items()))
    data = b"\x89PNG not really, but bytes"
    assert name.startswith("sha256")
    assert digest(data) == ImageFacts.of(data, keep=False).sha256 == hashlib.sha256(data).hexdigest()


def test_every_digest_gives_a_positive_time_and_a_row_in_the_table() -> None:
    files = [bytes(range(256)) * 64, b"x"]
    figures = {"tiny": {name: cpu_ms_per_file(digest, files, 0.01) for name, digest in available_digests().items()}}
    assert all(ms > 0 for ms in figures["tiny"].values())
    rows = table(figures).splitlines()
    assert len(rows) == 3
    assert rows[2].startswith("| tiny | ")
    assert rows[2].count("|") == len(figures["tiny"]) + 2
