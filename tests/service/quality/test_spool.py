"""The writer's spool: what the store does not take waits on disk, is written in order once it answers, once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from service.core.quality.log import SPOOL_ERROR, SPOOL_FULL, PredictionLog
from service.core.quality.records import PredictionRecord
from service.core.quality.spool import Spool, _payload
from service.core.quality.store import Store, predictions, sqlite_url
from tests.service.helpers import wait_until
from tests.service.quality.test_log import Drops, record
from tests.service.quality.test_log import rows_in as _rows_in


class FlakyStore(Store):
    """A store that fails while `down` is set, as a stopped database or a full disk does; it records each batch
    it took, and with `lose_ack` commits a batch and then raises, as a connection cut before the reply does."""

    def __init__(self, url: str, error: Exception) -> None:
        super().__init__(url)
        self.down = threading.Event()
        self.error = error
        self.lose_ack = False
        self.batches: list[list[str]] = []

    def write(self, records: Sequence[PredictionRecord]) -> int:
        if self.down.is_set():
            raise self.error
        inserted = super().write(records)
        self.batches.append([r.id for r in records])
        if self.lose_ack:
            self.lose_ack = False
            raise ConnectionResetError("server closed the connection unexpectedly")
        return inserted


DISK_FULL = OperationalError("INSERT INTO predictions ...", {}, Exception("database or disk is full"))
REFUSED = ConnectionRefusedError("connection to the database refused")


@pytest.fixture(params=[REFUSED, DISK_FULL], ids=["refused", "disk-full"])
def flaky(request: pytest.FixtureRequest, tmp_path: Path) -> FlakyStore:
    return FlakyStore(sqlite_url(tmp_path / "log"), request.param)


def rows_in(store: Store) -> int:
    store.ensure_schema()
    return _rows_in(store)


def logged_ids(store: Store) -> list[str]:
    with store.engine.connect() as connection:
        return list(connection.scalars(select(predictions.c.id)))


def test_rows_the_store_refuses_are_spooled_then_written_in_order_once_it_answers(
    flaky: FlakyStore, tmp_path: Path
) -> None:
    drops = Drops()
    log = PredictionLog(flaky, max_queue=1000, retention_s=0, on_drop=drops, spool_dir=tmp_path, spool_bytes=10**6)
    log.start()
    flaky.down.set()
    sent = [record() for _ in range(300)]
    for row in sent[:200]:
        log.put(row)
    assert log.wait_written(5.0)
    assert log.spooled == 200
    assert log.spooled_since is not None
    flaky.down.clear()
    for row in sent[200:]:  # behind the spooled rows, though the store answers again
        log.put(row)
    wait_until(lambda: log.spooled == 0, timeout_s=10)
    log.stop()
    assert drops.counts == {}
    assert [id for batch in flaky.batches for id in batch] == [r.id for r in sent]
    assert log.spooled_since is None


def test_a_batch_committed_but_not_acknowledged_is_replayed_without_duplicates(tmp_path: Path) -> None:
    store = FlakyStore(sqlite_url(tmp_path / "log"), REFUSED)
    log = PredictionLog(store, max_queue=1000, retention_s=0, spool_dir=tmp_path, spool_bytes=10**6)
    store.lose_ack = True
    log.start()
    sent = [record() for _ in range(50)]
    for row in sent:
        log.put(row)
    wait_until(lambda: len(store.batches) == 2, timeout_s=10)  # the lost ack, then the replay
    log.stop()
    assert sorted(logged_ids(store)) == sorted(r.id for r in sent)
    (counts,) = store.counts()
    assert counts.served == 50, "the running count holds only the rows inserted"


def test_rows_spooled_before_a_crash_are_written_by_the_next_process(flaky: FlakyStore, tmp_path: Path) -> None:
    first = PredictionLog(flaky, max_queue=1000, retention_s=0, spool_dir=tmp_path, spool_bytes=10**6)
    flaky.down.set()
    first.start()
    sent = [record() for _ in range(120)]
    for row in sent:
        first.put(row)
    first.stop()  # the store still down: the rows stay on disk
    assert first.spool is None
    assert rows_in(flaky) == 0
    flaky.down.clear()
    second = PredictionLog(flaky, max_queue=1000, retention_s=0, spool_dir=tmp_path, spool_bytes=10**6)
    second.start()
    wait_until(lambda: rows_in(flaky) == 120, timeout_s=10)
    second.stop()
    assert [id for batch in flaky.batches for id in batch] == [r.id for r in sent]


def test_beyond_the_spool_bound_rows_are_dropped_and_counted(tmp_path: Path) -> None:
    drops = Drops()
    store = FlakyStore(sqlite_url(tmp_path / "log"), REFUSED)
    store.down.set()
    one = len(_payload(record()))  # every row here has the same size
    log = PredictionLog(store, max_queue=1000, retention_s=0, on_drop=drops, spool_dir=tmp_path,
                        spool_bytes=10 * one + one // 2)
    log.start()
    for _ in range(25):
        log.put(record())
    assert log.wait_written(5.0)
    assert log.spooled == 10
    assert drops.counts == {SPOOL_FULL: 15}
    store.down.clear()
    wait_until(lambda: log.spooled == 0, timeout_s=10)
    log.stop()
    assert rows_in(store) == 10


def test_a_spool_whose_disk_fails_keeps_the_rows_in_memory_and_writes_them_later(
    flaky: FlakyStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drops = Drops()
    log = PredictionLog(flaky, max_queue=1000, retention_s=0, on_drop=drops, spool_dir=tmp_path, spool_bytes=10**6)
    log.start()
    assert log.spool is not None
    append = log.spool.append
    monkeypatch.setattr(log.spool, "append", lambda records: (_ for _ in ()).throw(OSError(28, "No space left")))
    flaky.down.set()
    sent = [record() for _ in range(40)]
    for row in sent:
        log.put(row)
    assert log.wait_written(5.0)
    monkeypatch.setattr(log.spool, "append", append)
    flaky.down.clear()
    wait_until(lambda: rows_in(flaky) == 40, timeout_s=10)
    log.stop()
    assert drops.counts == {}
    assert SPOOL_ERROR not in drops.counts


def test_the_spool_file_of_a_live_process_is_not_taken_by_another(tmp_path: Path) -> None:
    first = Spool(tmp_path, 10**6)
    second = Spool(tmp_path, 10**6)
    assert first.path != second.path
    first.close()
    third = Spool(tmp_path, 10**6)
    assert third.path == first.path
    second.close()
    third.close()


def test_an_image_kept_in_the_log_survives_the_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10**6)
    row = PredictionRecord(**{**record().row(), "image": b"\x89PNG\x00\xff"})
    spool.append([row])
    head = spool.head(10)
    assert head is not None
    assert head.records == [row]
    spool.remove(head)
    assert (spool.rows, spool.bytes, spool.since) == (0, 0, None)
    spool.close()


def test_until_handled_returns_once_the_rows_put_before_it_are_spooled(tmp_path: Path) -> None:
    store = FlakyStore(sqlite_url(tmp_path / "log"), REFUSED)
    store.down.set()
    log = PredictionLog(store, max_queue=100, retention_s=0, spool_dir=tmp_path, spool_bytes=10**6)

    async def put_and_wait() -> tuple[bool, int]:
        log.put(record())
        return await log.until_handled(5.0), log.spooled

    log.start()
    assert asyncio.run(put_and_wait()) == (True, 1)
    log.stop()


def test_until_handled_gives_up_after_its_timeout(tmp_path: Path) -> None:
    log = PredictionLog(Store(sqlite_url(tmp_path)), max_queue=100, retention_s=0)  # never started

    async def put_and_wait() -> bool:
        log.put(record())
        return await log.until_handled(0.05)

    assert asyncio.run(put_and_wait()) is False


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (needs root and mount rights, as in make test's container; skipped elsewhere)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True,
                             check=False) if os.geteuid() == 0 else None
    if mounted is None or mounted.returncode != 0:
        pytest.skip("mounting a tmpfs needs root and the right to mount")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_under_the_sqlite_log_loses_no_row_once_space_is_freed(small_disk: Path, tmp_path: Path) -> None:
    store = Store(sqlite_url(small_disk))
    store.write([record() for _ in range(10)])
    filler = small_disk / "filler"
    with filler.open("wb", buffering=0) as f, contextlib.suppress(OSError):  # every byte the disk has left
        for size in (65536, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * size)
    drops = Drops()
    log = PredictionLog(store, max_queue=10_000, retention_s=0, on_drop=drops, spool_dir=tmp_path / "spool",
                        spool_bytes=10**7)
    log.start()
    sent = [record() for _ in range(3000)]  # ~1 MB of rows: more than the full disk takes
    for row in sent:
        log.put(row)
    assert log.wait_written(30.0)
    assert log.spooled > 0, "the store failed with 'database or disk is full'"
    filler.unlink()
    wait_until(lambda: log.spooled == 0, timeout_s=30)
    log.stop()
    assert drops.counts == {}
    assert rows_in(store) == 3010


def test_the_rows_of_a_process_that_did_not_come_back_are_adopted(tmp_path: Path) -> None:
    first, second = Spool(tmp_path, 10**6), Spool(tmp_path, 10**6)  # two processes sharing a folder
    rows = [record() for _ in range(5)]
    first.append(rows[:2])
    second.append(rows[2:])
    first.close()
    second.close()  # both crashed; one comes back
    store = Store(sqlite_url(tmp_path / "log"))
    log = PredictionLog(store, max_queue=100, retention_s=0, spool_dir=tmp_path, spool_bytes=10**6)
    log.start()
    wait_until(lambda: rows_in(store) == 5, timeout_s=10)
    log.stop()
    again = Spool(tmp_path, 10**6)
    assert again.adopt() == (0, 0)
    again.close()


def test_a_live_process_keeps_its_spool(tmp_path: Path) -> None:
    live = Spool(tmp_path, 10**6)
    live.append([record()])
    other = Spool(tmp_path, 10**6)
    assert other.adopt() == (0, 0)
    assert live.rows == 1
    other.close()
    live.close()
