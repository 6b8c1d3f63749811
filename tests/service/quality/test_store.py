"""The store's running counts and judged answers stay equal to what the log itself says, through duplicates,
late shadow answers, replaced verdicts, retention and the upgrade of a log written before they existed."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import case, func, select

from service.core.quality import log as log_module
from service.core.quality.log import PredictionLog
from service.core.quality.records import Answerer, ImageFacts, PredictionRecord, new_id
from service.core.quality.store import Store, VersionCounts, feedback, predictions, sqlite_url
from tests.service.helpers import wait_until

SERVED = Answerer("1", "onnxruntime", "fp32", ("functional", "defective"))
SHADOW = Answerer("2", "onnxruntime", "fp32", ("functional", "defective"))


def answer(id: str, answerer: Answerer, label: str, at: float | None = None) -> PredictionRecord:
    row = PredictionRecord.of(id, "served" if answerer is SERVED else "shadow", answerer, 0.5, label, 0.5,
                              ImageFacts.of(b"x"))
    return row if at is None else PredictionRecord(**{**row.row(), "time": at})


def from_the_log(store: Store) -> tuple[list[VersionCounts], tuple[int, int], list[tuple[str, str]]]:
    """The counts, shadow agreement and version 2's judged answers, computed from the log by scanning it."""
    served = predictions.alias("served")
    with store.engine.connect() as connection:
        counts = [VersionCounts(r.version, int(r.s), int(r.h)) for r in connection.execute(
            select(predictions.c.version, func.sum(case((predictions.c.role == "served", 1), else_=0)).label("s"),
                   func.sum(case((predictions.c.role == "shadow", 1), else_=0)).label("h"))
            .group_by(predictions.c.version))]
        compared, agreed = connection.execute(
            select(func.count(), func.sum(case((predictions.c.label == served.c.label, 1), else_=0)))
            .join(served, (served.c.id == predictions.c.id) & (served.c.role == "served"))
            .where(predictions.c.role == "shadow", predictions.c.version == "2")).one()
        judged = connection.execute(
            select(predictions.c.label, feedback.c.label).join(feedback, feedback.c.id == predictions.c.id)
            .where(predictions.c.version == "2").order_by(feedback.c.time.desc())).all()
    # Verdicts given in one call share their time: their order among themselves is the database's.
    return sorted(counts, key=lambda c: c.version), (int(compared), int(agreed or 0)), sorted(tuple(j) for j in judged)


def kept(store: Store) -> tuple[list[VersionCounts], tuple[int, int], list[tuple[str, str]]]:
    return (sorted(store.counts(), key=lambda c: c.version), store.agreement("2"),
            sorted(store.recent_verdicts("2", 10**6)))


def test_counts_agreement_and_judged_answers_follow_every_write_and_delete(tmp_path: Path) -> None:
    store = Store(sqlite_url(tmp_path))
    old, ids = time.time() - 3600, [new_id() for _ in range(12)]
    served = [answer(id, SERVED, "defective", at=old if n < 4 else None) for n, id in enumerate(ids)]
    assert store.write(served[:6]) == 6
    assert store.write(served) == 6, "a replayed row is skipped and not counted twice"
    store.give_verdicts([(ids[0], "functional"), (ids[5], "defective")], time.time())
    # Shadow answers: in the served rows' batch, later, and after a verdict (ids[5]); they agree on even n.
    store.write([answer(id, SHADOW, "defective" if n % 2 == 0 else "functional", at=old if n < 4 else None)
                 for n, id in enumerate(ids[:8])])
    store.give_verdicts([(ids[5], "functional"), (ids[6], "defective")], time.time())  # ids[5] replaced
    assert kept(store) == from_the_log(store)
    assert store.agreement("2") == (8, 4)
    assert store.delete_chunk(time.time() - 60, 3) > 0
    assert kept(store) == from_the_log(store)
    assert store.delete_before(time.time() - 60) > 0
    assert kept(store) == from_the_log(store)
    assert sorted(store.counts(), key=lambda c: c.version) == [VersionCounts("1", 8, 0), VersionCounts("2", 0, 4)]


def test_a_log_written_before_the_running_counts_gets_them_at_its_first_open(tmp_path: Path) -> None:
    path = tmp_path / "predictions.sqlite3"
    with sqlite3.connect(path) as db:  # the schema as released before the counts, with rows and a verdict
        db.executescript("""
            CREATE TABLE predictions (id VARCHAR(36) NOT NULL, role VARCHAR(8) NOT NULL, time FLOAT NOT NULL,
              version VARCHAR(64) NOT NULL, engine VARCHAR(32) NOT NULL, precision VARCHAR(16) NOT NULL,
              probability FLOAT NOT NULL, label VARCHAR(64) NOT NULL, threshold FLOAT NOT NULL,
              image_sha256 VARCHAR(64) NOT NULL, image_bytes INTEGER NOT NULL, image BLOB, PRIMARY KEY (id, role));
            CREATE INDEX ix_predictions_time ON predictions (time);
            CREATE INDEX ix_predictions_version_role ON predictions (version, role);
            CREATE TABLE feedback (id VARCHAR(36) NOT NULL PRIMARY KEY, label VARCHAR(64) NOT NULL,
              time FLOAT NOT NULL);
            CREATE INDEX ix_feedback_time ON feedback (time);
        """)
        for n in range(6):
            for role, version, label in (("served", "1", "defective"), ("shadow", "2", "defective" if n % 3 else
                                                                           "functional")):
                db.execute("INSERT INTO predictions VALUES (?, ?, ?, ?, 'onnxruntime', 'fp32', 0.5, ?, 0.5, 'h', 1, "
                           "NULL)", (f"id-{n}", role, time.time(), version, label))
        db.execute("INSERT INTO feedback VALUES ('id-0', 'functional', ?)", (time.time(),))
    store = Store(sqlite_url(tmp_path))
    assert kept(store) == from_the_log(store)
    assert store.agreement("2") == (6, 4)
    assert store.recent_verdicts("2", 10) == [("functional", "functional")]
    assert store.recent_verdicts("1", 10) == [("defective", "functional")]


def test_retention_deletes_in_chunks_between_the_writers_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(sqlite_url(tmp_path))
    old = time.time() - 7200
    store.write([answer(new_id(), SERVED, "defective", at=old) for _ in range(1000)])
    chunks: list[int] = []
    delete_chunk = store.delete_chunk

    def counted(cutoff: float, rows: int) -> int:
        chunks.append(rows)
        return delete_chunk(cutoff, rows)

    store.delete_chunk = counted  # type: ignore[method-assign]
    monkeypatch.setattr(log_module, "RETENTION_CHUNK_ROWS", 100)
    log = PredictionLog(store, max_queue=100, retention_s=60)
    log.start()
    fresh = [answer(new_id(), SERVED, "functional") for _ in range(20)]
    for row in fresh:
        log.put(row)
    wait_until(lambda: len(chunks) >= 11, timeout_s=10)
    log.stop()
    assert chunks[:11] == [100] * 11, "ten chunks of expired rows, then one that finds none"
    assert store.counts() == [VersionCounts("1", 20, 0)]
