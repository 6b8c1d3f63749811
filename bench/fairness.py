"""Fairness: small requests alone, then beside large uploads, against one real server.

Four wrk connections post ELPV cells (raw bodies, as in the end-to-end runs) for T s alone; then for T s
again while two clients each post, in a loop, one multipart request of 16 x 64-megapixel PNGs (8000x8000
nearly uniform noise, ~3.9 MB each: 62 MB a request, within the default 64 MiB body limit). A large client
honours Retry-After (capped), as a client should; a 503 for a large request is an allowed answer. Reported: the
small requests' p99 beside ÷ alone, their refusals and failures, and what the large requests got.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench import load
from bench.corpora import Corpus
from bench.endtoend import check_answers
from bench.servers import Server, ServerSpec

log = logging.getLogger("bench")
SMALL_CONNECTIONS = 4
LARGE_CLIENTS = 2
LARGE_FILES = 16
LARGE_SIDE = 8000  # 64 M pixels: the default MAX_PIXELS admits exactly this
# 2 % of pixels one level brighter: 3.9 MB as PNG (zlib level 6), so 16 fit the 64 MiB body limit.
LARGE_NOISE_FRACTION = 0.02
LARGE_TIMEOUT_S = 120.0
RETRY_AFTER_CAP_S = 2.0


def large_png(directory: Path) -> Path:
    """The 64 MP PNG, made once (~3 s) and kept beside the corpora."""
    path = directory / f"noise-{LARGE_SIDE}x{LARGE_SIDE}.png"
    if not path.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(64)
        pixels = np.full((LARGE_SIDE, LARGE_SIDE), 128, np.uint8)
        pixels += (rng.random(pixels.shape, dtype=np.float32) < LARGE_NOISE_FRACTION).astype(np.uint8)
        partial = path.with_suffix(".partial")
        Image.fromarray(pixels, "L").save(partial, "PNG", compress_level=6)
        partial.replace(path)
    return path


def multipart_body(png: bytes, files: int) -> tuple[bytes, dict[str, str]]:
    """One multipart/form-data request of `files` copies, encoded once by httpx (so sending costs no encoding)."""
    request = httpx.Request(
        "POST", "http://bench/predict", files=[("file", (f"large-{i}.png", png, "image/png")) for i in range(files)]
    )
    return request.read(), {"Content-Type": request.headers["Content-Type"]}


@dataclass(frozen=True)
class LargeOutcomes:
    """What the large requests got: answers by status ('200', '503', ...) and transport errors by type."""

    answers: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return sum(self.answers.values()) + sum(self.errors.values())


@dataclass(frozen=True)
class FairnessResult:
    server: str
    duration_s: int
    large_png_bytes: int
    alone: load.LoadResult
    beside: load.LoadResult
    large: LargeOutcomes

    @property
    def p99_ratio(self) -> float | None:
        """Small requests' p99 beside the large uploads ÷ alone."""
        if self.alone.p99_ms is None or self.beside.p99_ms is None or self.alone.p99_ms == 0:
            return None
        return self.beside.p99_ms / self.alone.p99_ms

    @property
    def small_failures(self) -> int:
        """Small requests refused (any non-2xx, 503 included) or failed (socket errors, timeouts) beside them."""
        return self.beside.non_2xx + self.beside.socket_errors

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "p99_ratio": self.p99_ratio, "small_failures": self.small_failures,
                "large_requests": self.large.requests}  # fmt: skip


class LargeClients:
    """`clients` threads posting the same large request in a loop until stopped; counts what they got."""

    def __init__(self, url: str, body: bytes, headers: dict[str, str], clients: int) -> None:
        self._url, self._body, self._headers = url, body, headers
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._answers: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._started = threading.Barrier(clients + 1)
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(clients)]

    def _loop(self) -> None:
        with httpx.Client(timeout=LARGE_TIMEOUT_S) as client:
            self._started.wait()
            while not self._stop.is_set():
                try:
                    response = client.post(f"{self._url}/predict", content=self._body, headers=self._headers)
                except httpx.HTTPError as exc:
                    with self._lock:
                        self._errors[type(exc).__name__] += 1
                    continue
                with self._lock:
                    self._answers[str(response.status_code)] += 1
                retry_after = response.headers.get("Retry-After")
                if response.status_code == 503 and retry_after:
                    with contextlib.suppress(ValueError):
                        self._stop.wait(min(float(retry_after), RETRY_AFTER_CAP_S))

    def __enter__(self) -> LargeClients:
        for thread in self._threads:
            thread.start()
        self._started.wait()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(LARGE_TIMEOUT_S + 5)

    def outcomes(self) -> LargeOutcomes:
        with self._lock:
            return LargeOutcomes(dict(self._answers), dict(self._errors))


def measure(spec: ServerSpec, small: Corpus, corpus_dir: Path, duration_s: int, log_dir: Path) -> FairnessResult:
    """Starts the server, runs the small clients alone and then beside the large ones, stops it."""
    png = large_png(corpus_dir).read_bytes()
    body, headers = multipart_body(png, LARGE_FILES)
    with Server(spec, log_dir) as server:
        check_answers(server, small)
        load.run(server.url, small.list_file, SMALL_CONNECTIONS, 1)  # warm-up
        server.wait_idle()
        alone = load.run(server.url, small.list_file, SMALL_CONNECTIONS, duration_s)
        server.wait_idle()
        with LargeClients(server.url, body, headers, LARGE_CLIENTS) as large:
            time.sleep(1.0)  # the uploads are in, their decodes under way
            beside = load.run(server.url, small.list_file, SMALL_CONNECTIONS, duration_s)
            log.info("fairness: small requests done; waiting for the large requests in flight")
        return FairnessResult(spec.name, duration_s, len(png), alone, beside, large.outcomes())
