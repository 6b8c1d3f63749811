"""The prediction log's writer: bounded queue, drops counted by reason, nothing lost on a graceful stop."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from service.core.quality.log import QUEUE_FULL, STORE_ERROR, PredictionLog
from service.core.quality.records import Answerer, ImageFacts, PredictionRecord, new_id
from service.core.quality.store import Store, predictions, sqlite_url

ANSWERER = Answerer("1", "onnxruntime", "fp32", ("functional", "defective"))


def record(at: float | None = None) -> PredictionRecord:
    row = PredictionRecord.of(new_id(), "served", ANSWERER, 0.7, "defective", 0.5, ImageFacts.of(b"png bytes"))
    return row if at is None else PredictionRecord(**{**row.row(), "time": at})


def rows_in(store: Store) -> int:
    with store.engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(predictions)).scalar_one()


class Drops:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def __call__(self, reason: str, rows: int) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + rows


class FailingStore(Store):
    """A store whose database is down: every write raises, as a refused connection does."""

    def write(self, records: object) -> None:
        raise ConnectionRefusedError("connection to the database refused")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(sqlite_url(tmp_path))


def test_a_full_queue_drops_and_counts_rows_and_never_blocks(store: Store) -> None:
    drops = Drops()
    log = PredictionLog(store, max_queue=3, retention_s=0, on_drop=drops)  # not started: nothing drains it
    start = time.perf_counter()
    for _ in range(5):
        log.put(record())
    assert time.perf_counter() - start < 1.0
    assert drops.counts == {QUEUE_FULL: 2}
    log.start()
    log.stop()
    assert rows_in(store) == 3


def test_a_failing_store_drops_counts_and_warns_once_per_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    drops = Drops()
    log = PredictionLog(FailingStore(sqlite_url(tmp_path)), max_queue=100, retention_s=0, on_drop=drops)
    log.start()
    with caplog.at_level(logging.WARNING, logger="service.core.quality.log"):
        for _ in range(3):
            for _ in range(4):
                log.put(record())
            assert log.wait_written(5.0)
        log.stop()
    assert drops.counts == {STORE_ERROR: 12}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "connection to the database refused" in warnings[0]
    assert 'prediction_log_dropped_total{reason="store_error"}' in warnings[0]


def test_a_graceful_stop_writes_every_queued_row(store: Store) -> None:
    written: list[int] = []
    log = PredictionLog(store, max_queue=10_000, retention_s=0, on_write=written.append)
    log.start()
    for _ in range(2_000):
        log.put(record())
    log.stop()
    assert rows_in(store) == 2_000
    assert sum(written) == 2_000


def test_wait_written_returns_once_the_rows_put_before_it_are_written(store: Store) -> None:
    gate = threading.Event()
    write = store.write

    def slow_write(records: object) -> None:
        gate.wait(5.0)
        write(records)  # type: ignore[arg-type]

    store.write = slow_write  # type: ignore[method-assign]
    log = PredictionLog(store, max_queue=100, retention_s=0)
    log.start()
    log.put(record())
    assert not log.wait_written(0.1)
    gate.set()
    assert log.wait_written(5.0)
    log.stop()


def test_the_writer_deletes_rows_older_than_the_retention_time(store: Store) -> None:
    log = PredictionLog(store, max_queue=100, retention_s=60)
    log.put(record(at=time.time() - 7200))
    log.start()  # the first retention pass follows the first write
    assert log.wait_written(5.0)
    log.put(record())
    log.stop()
    assert rows_in(store) == 1


def test_the_sqlite_store_uses_wal(store: Store) -> None:
    store.ensure_schema()
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
