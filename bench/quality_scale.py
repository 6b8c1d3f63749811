"""The prediction log at scale: `python -m bench.quality --rows 10000000 [--postgres]`.

Synthetic rows are written through the store's own code (Store.write, 500 rows a transaction, as the writer
does) over the last 29 days: served answers of versions "0" (the first half) and "1", 5 % also scored in shadow
by version "2", and a verdict for 2 % of the served answers (the issue's 20,000 per 1,000,000). Then a real
`python -m service` on that log answers, one request at a time:
- POST /feedback, one verdict for a random logged id (p50, p99; target p99 <= 20 ms);
- GET /quality (p50, p99; target <= 100 ms);
- POST /predict, beside the same server on an empty log, in turns (p50, p99; target: unchanged).
Then retention: the writer (PredictionLog, in this process) with every synthetic row expired, while a row is
put every 5 ms; the longest gap between two of its writes while it deletes, and the rows dropped meanwhile
(target: no gap over 1 s, none dropped), for at most --retention-s seconds.
"""

from __future__ import annotations

import itertools
import logging
import random
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.quality_faults import gray_png
from bench.servers import Server, service_spec
from service.core.quality.log import PredictionLog
from service.core.quality.records import Answerer, ImageFacts, PredictionRecord, new_id
from service.core.quality.store import Store, sqlite_url

log = logging.getLogger("bench.quality")
CLASSES = ("functional", "defective")
DAY_S = 24 * 3600.0
SHADOW_SHARE = 0.05
JUDGED_SHARE = 0.02
CHUNK = 500


@dataclass(frozen=True)
class Scale:
    store: str
    rows: int
    fill_s: float
    feedback_p50_ms: float
    feedback_p99_ms: float
    quality_p50_ms: float
    quality_p99_ms: float
    predict_p50_ms: float
    predict_p99_ms: float
    predict_empty_p50_ms: float
    predict_empty_p99_ms: float
    retention_deleted: int
    retention_s: float
    retention_max_gap_s: float
    retention_dropped: int


def fill(store: Store, rows: int, seed: int = 0) -> tuple[float, list[str]]:
    """`rows` served answers (and their shadow rows and verdicts); the seconds it took and a sample of ids."""
    rng = random.Random(seed)
    answerers = [Answerer(v, "onnxruntime", "fp32", CLASSES) for v in ("0", "1", "2")]
    image = ImageFacts.of(b"synthetic")
    start, now = time.perf_counter(), time.time()
    sample: list[str] = []
    for first in range(0, rows, CHUNK):
        batch, verdicts = [], []
        for n in range(first, min(first + CHUNK, rows)):
            at = now - 29 * DAY_S * (1 - n / rows)
            id = new_id()
            label = CLASSES[rng.random() < 0.3]
            version = answerers[n >= rows // 2]
            batch.append(PredictionRecord(id, "served", at, version.version, "onnxruntime", "fp32", 0.5, label, 0.5,
                                          image.sha256, image.size))
            if rng.random() < SHADOW_SHARE:
                shadow = CLASSES[rng.random() < 0.3]
                batch.append(PredictionRecord(id, "shadow", at + 0.5, "2", "onnxruntime", "fp32", 0.5, shadow, 0.5,
                                              image.sha256, image.size))
            if rng.random() < JUDGED_SHARE:
                verdicts.append((id, CLASSES[rng.random() < 0.3]))
            if rng.random() < 2000 / rows:
                sample.append(id)
        store.write(batch)
        if verdicts:
            store.give_verdicts(verdicts, batch[-1].time + 60)
        if first and first % 500_000 == 0:
            log.info("%d rows in %.0f s", first, time.perf_counter() - start)
    return time.perf_counter() - start, sample


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


def _timed(call: Callable[[], httpx.Response], times: int) -> list[float]:
    taken = []
    for _ in range(times):
        start = time.perf_counter()
        response = call()
        taken.append(time.perf_counter() - start)
        if response.status_code != 200:
            raise RuntimeError(f"{response.request.url} answered {response.status_code}: {response.text[:300]}")
    return taken


def retention(store: Store, budget_s: float) -> tuple[int, float, float, int]:
    """(rows deleted, seconds, longest gap between two writes, rows dropped) with every synthetic row expired."""
    writes: list[float] = []
    dropped = [0]
    writer = PredictionLog(store, max_queue=10_000, retention_s=1.0, on_write=lambda rows: writes.append(
        time.monotonic()), on_drop=lambda reason, rows: dropped.__setitem__(0, dropped[0] + rows))
    deleted = [0]
    delete_chunk = store.delete_chunk

    def counted(cutoff: float, rows: int) -> int:
        gone = delete_chunk(cutoff, rows)
        deleted[0] += gone
        if not gone:
            done.set()
        return gone

    done = threading.Event()
    store.delete_chunk = counted  # type: ignore[method-assign]
    answerer = Answerer("1", "onnxruntime", "fp32", CLASSES)
    start = time.monotonic()
    writer.start()
    while not done.is_set() and time.monotonic() - start < budget_s:
        writer.put(PredictionRecord.of(new_id(), "served", answerer, 0.5, "functional", 0.5, ImageFacts.of(b"r")))
        time.sleep(0.005)
    took = time.monotonic() - start
    writer.stop()
    store.delete_chunk = delete_chunk  # type: ignore[method-assign]
    gaps = [b - a for a, b in itertools.pairwise(writes)]
    return deleted[0], took, max(gaps, default=0.0), dropped[0]


def scale(name: str, url: str | None, rows: int, model: Path, work: Path, args: object) -> Scale:
    data = work / f"scale-{name}"
    store = Store(url or sqlite_url(data))
    log.info("%s: writing %d rows through Store.write", name, rows)
    fill_s, sample = fill(store, rows)
    log.info("%s: %d rows in %.0f s (%.0f rows/s)", name, rows, fill_s, rows / fill_s)
    env = {"DATA_DIR": str(data), "PREDICTION_LOG_RETENTION_S": "0", **({"PREDICTION_LOG_URL": url} if url else {})}
    empty = {"DATA_DIR": str(work / f"empty-{name}"), "PREDICTION_LOG_RETENTION_S": "0"}
    image = gray_png(120)
    rng = random.Random(1)
    with Server(service_spec(f"full-{name}", model, env), work) as full, \
            Server(service_spec(f"empty-{name}", model, empty), work) as bare, httpx.Client(timeout=60) as client:
        def feedback() -> httpx.Response:
            return client.post(f"{full.url}/feedback", json={"id": rng.choice(sample), "label": rng.choice(CLASSES)})

        def predict(server: Server) -> Callable[[], httpx.Response]:
            return lambda: client.post(f"{server.url}/predict", files={"file": ("c.png", image, "image/png")})

        _timed(feedback, 20)
        _timed(lambda: client.get(f"{full.url}/quality"), 3)  # warm: the first open, the page cache
        feedback_times = _timed(feedback, getattr(args, "requests", 300))
        quality_times = _timed(lambda: client.get(f"{full.url}/quality"), 50)
        on, off = [], []
        for _ in range(5):  # in turns, so a neighbour's load falls on both alike
            on += _timed(predict(full), 40)
            off += _timed(predict(bare), 40)
    deleted, took, gap, dropped = retention(store, getattr(args, "retention_s", 120.0))
    store.close()
    f50, f99 = _percentiles(feedback_times)
    q50, q99 = _percentiles(quality_times)
    p50, p99 = _percentiles(on)
    e50, e99 = _percentiles(off)
    return Scale(name, rows, fill_s, f50, f99, q50, q99, p50, p99, e50, e99, deleted, took, gap, dropped)
