"""The prediction log's writer: the request path only does `put_nowait` on a bounded queue; one thread drains it
into the store in batches.

When the store fails, the batch goes to the spool (spool.py, on local disk) instead of being dropped, and so
does every batch after it while rows wait there, so they reach the store in the order they were answered: the
writer replays the spool's head (BATCH_ROWS per transaction, REPLAY_BATCHES per turn) once the store answers
again, trying again every RETRY_S..MAX_RETRY_S meanwhile. A replay is idempotent (the store skips a row it
has), so a batch whose commit was not seen is not written twice. Rows are dropped, and counted in
prediction_log_dropped_total{reason} with one WARNING line per reason until writing works again, only:
- queue_full: the queue is full (the store and spool slower than traffic);
- spool_full: the spool holds PREDICTION_LOG_SPOOL_BYTES;
- spool_error: the spool's disk fails too (the batch is kept in memory, up to the queue's size, and retried);
- store_error: the store fails and there is no spool (PREDICTION_LOG_SPOOL_BYTES=0, or its folder unwritable).
The service keeps answering at full speed meanwhile. `stop()` writes every queued row (to the store, else the
spool) before it returns; rows left in the spool are written by the next process that claims it.

Retention deletes expired rows RETENTION_CHUNK_ROWS at a time between batches, so the writer is never held
longer than a batch: one transaction over every expired row held it for as long as the delete took.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

from service.core.failures import one_line
from service.core.quality.progress import Handled
from service.core.quality.records import PredictionRecord
from service.core.quality.retention import Retention
from service.core.quality.spool import Spool
from service.core.quality.store import Store

log = logging.getLogger(__name__)

QUEUE_FULL = "queue_full"
STORE_ERROR = "store_error"
SPOOL_FULL = "spool_full"
SPOOL_ERROR = "spool_error"
DROP_REASONS = (QUEUE_FULL, STORE_ERROR, SPOOL_FULL, SPOOL_ERROR)
# Rows per transaction. Measured (SQLite, WAL): a one-row transaction costs 0.5 ms, a row in a 50-row one
# 0.05 ms; the writer holds the GIL for most of it, so at 300 images/s one-row transactions would take ~15 % of
# a core from serving. So the writer lingers LINGER_S after a row arrives, to write what follows with it.
BATCH_ROWS = 500
LINGER_S = 0.05
# Replayed per turn of the writer: more than a turn's new rows (at most BATCH_ROWS), so the spool shrinks.
REPLAY_BATCHES = 4
RETRY_S = 0.5
MAX_RETRY_S = 2.0
RETENTION_CHUNK_ROWS = BATCH_ROWS
# A stop writes what the spool holds for this long at most (what is left is written after the next start), so
# a long spool does not hold the shutdown past GRACEFUL_SHUTDOWN_S's order of magnitude.
STOP_REPLAY_S = 5.0
_STOP = object()


class Reports:
    """The log's counts and its WARNING lines, each reason warned once until writing works again."""

    def __init__(self, on_drop: Callable[[str, int], None], on_write: Callable[[int], None], where: str) -> None:
        self._on_drop = on_drop
        self._on_write = on_write
        self._where = where
        self._warned: set[str] = set()

    def first(self, reason: str) -> bool:
        """True the first time `reason` happens since it was last cleared."""
        if reason in self._warned:
            return False
        self._warned.add(reason)
        return True

    def clear(self, reason: str) -> None:
        self._warned.discard(reason)

    def dropped(self, reason: str, rows: int, why: str) -> None:
        self._on_drop(reason, rows)
        if self.first(reason):
            log.warning("%s: dropping rows, counted in prediction_log_dropped_total{reason=\"%s\"}", why, reason)

    def written(self, rows: int) -> None:
        self._on_write(rows)
        if STORE_ERROR in self._warned:
            self._warned.discard(STORE_ERROR)
            log.info("the prediction log writes again (%s)", self._where)

    def store_failed(self, exc: Exception, spool: Spool | None) -> None:
        if spool is not None and self.first(STORE_ERROR):
            log.warning("the prediction log's store failed: %s; rows wait in the spool %s (up to %d bytes)",
                        one_line(exc), spool.path, spool.max_bytes)


class PredictionLog:
    def __init__(
        self, store: Store, *, max_queue: int, retention_s: float,
        on_drop: Callable[[str, int], None] = lambda reason, rows: None,
        on_write: Callable[[int], None] = lambda rows: None,
        spool_dir: Path | None = None, spool_bytes: int = 0,
    ) -> None:
        self.store = store
        self.retention_s = retention_s
        self._max_queue = max_queue
        self._queue: queue.Queue[object] = queue.Queue(max_queue)
        self._report = Reports(on_drop, on_write, store.where)
        self._spool_dir = spool_dir if spool_bytes > 0 else None
        self._spool_bytes = spool_bytes
        self.spool: Spool | None = None
        self._held: list[PredictionRecord] = []  # neither the store nor the spool took them: retried first
        self._retry_s = RETRY_S
        self._next_try = 0.0  # time.monotonic() of the next replay
        self._thread: threading.Thread | None = None
        self._progress = Handled()
        self._retention = Retention(store, retention_s, RETENTION_CHUNK_ROWS)

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    @property
    def spooled(self) -> int:
        return self.spool.rows if self.spool is not None else 0

    @property
    def spooled_bytes(self) -> int:
        return self.spool.bytes if self.spool is not None else 0

    @property
    def spooled_since(self) -> float | None:
        """Unix time the oldest row waiting in the spool was spooled."""
        return self.spool.since if self.spool is not None else None

    def start(self) -> None:
        if self._thread is None:
            self._open_spool()
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()

    def put(self, record: PredictionRecord) -> None:
        """Never blocks: a full queue drops the row and counts it."""
        self._progress.offer()
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self._report.dropped(QUEUE_FULL, 1, "the prediction log's queue is full (the store is slower than traffic)")
            self._handle(1)

    def wait_written(self, timeout_s: float) -> bool:
        """Waits until every row offered before the call is written, spooled or dropped (a verdict for an
        answer just given)."""
        return self._progress.wait(timeout_s)

    async def until_handled(self, timeout_s: float) -> bool:
        """As wait_written, on the event loop: waits for no thread."""
        return await self._progress.until(timeout_s)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Writes what is queued (to the store, else the spool), then ends the thread."""
        if self._thread is None:
            return
        try:
            self._queue.put(_STOP, timeout=timeout_s)
        except queue.Full:
            log.warning("the prediction log's writer did not take the stop marker in %g s", timeout_s)
        self._thread.join(timeout_s)
        if not self._thread.is_alive() and self.spool is not None:
            self.spool.close()
            self.spool = None
        self._thread = None

    def _open_spool(self) -> None:
        if self._spool_dir is not None:
            self.spool = open_spool(self._spool_dir, self._spool_bytes, self._report.dropped)

    def _run(self) -> None:
        stopping = False
        while True:
            try:
                first = self._queue.get(timeout=self._idle_s())
            except queue.Empty:
                first = None
            # No linger during a retention pass (its chunks are the linger), nor while rows are spooled: a row
            # reaches the spool's disk one transaction after its answer, so a SIGKILL then loses the fewest.
            if first is not None and first is not _STOP and not self._retention.under_way and not self.spooled:
                time.sleep(LINGER_S)
            batch: list[PredictionRecord] = []
            item = first
            while item is not None:
                if item is _STOP:
                    stopping = True
                else:
                    batch.append(item)  # type: ignore[arg-type]
                if len(batch) >= BATCH_ROWS:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    item = None
            if batch or (self._held and time.monotonic() >= self._next_try):
                self._write(batch)
            self._replay()
            if self._queue.empty():
                self._report.clear(QUEUE_FULL)
            if not self.spooled:  # the store is not tried while rows are spooled
                self._retention.step()
            if stopping and self._queue.empty():
                # Rows put after the marker (a request answered during shutdown) were taken above.
                self._next_try = 0.0
                if self._held:
                    self._write([])
                self._replay(budget_s=STOP_REPLAY_S)
                if self._held:
                    self._report.dropped(SPOOL_ERROR, len(self._held), "the prediction log stops with rows neither the "
                                  "store nor the spool took")
                return

    def _idle_s(self) -> float | None:
        """How long the writer may wait for a row: until the next replay or retention chunk is due."""
        waits = []
        if self._held or self.spooled:
            waits.append(max(self._next_try - time.monotonic(), 0.0))
        if (retention := self._retention.due_in()) is not None:
            waits.append(retention)
        return min(waits) if waits else None

    def _write(self, batch: list[PredictionRecord]) -> None:
        rows, self._held = self._held + batch, []
        try:
            if self.spooled:  # behind the rows that wait, in order
                self._to_spool(rows)
                return
            try:
                self.store.write(rows)
            except Exception as exc:  # noqa: BLE001  any store failure: the spool takes the rows
                self._report.store_failed(exc, self.spool)
                if self.spool is None:
                    self._report.dropped(STORE_ERROR, len(rows), f"the prediction log's store failed: {one_line(exc)}")
                else:
                    self._to_spool(rows)
            else:
                self._report.written(len(rows))
        finally:
            self._handle(len(batch))

    def _to_spool(self, rows: list[PredictionRecord]) -> None:
        assert self.spool is not None
        try:
            taken = self.spool.append(rows)
        except Exception as exc:  # noqa: BLE001  the spool's disk too: keep them, bounded, and try again
            self._held = rows[-self._max_queue:]
            self._next_try = time.monotonic() + self._retry_s
            if len(rows) > len(self._held):
                self._report.dropped(SPOOL_ERROR, len(rows) - len(self._held),
                              f"the prediction log's spool failed ({one_line(exc)}) and holds no more in memory")
            elif self._report.first(SPOOL_ERROR):
                log.warning("the prediction log's spool %s failed: %s; keeping %d rows in memory and trying "
                            "again", self.spool.path, one_line(exc), len(self._held))
            return
        self._report.clear(SPOOL_ERROR)
        if taken < len(rows):
            self._report.dropped(SPOOL_FULL, len(rows) - taken,
                          f"the prediction log's spool holds PREDICTION_LOG_SPOOL_BYTES ({self.spool.max_bytes})")

    def _replay(self, budget_s: float = 0.0) -> None:
        """Writes the spool's head to the store: REPLAY_BATCHES transactions, or as many as `budget_s` allows."""
        if self.spool is None or not self.spool.rows or time.monotonic() < self._next_try:
            return
        replayed, end = 0, time.monotonic() + budget_s
        while replayed < REPLAY_BATCHES or time.monotonic() < end:
            head = self.spool.head(BATCH_ROWS)
            if head is None:
                break
            try:
                self.store.write(head.records)
            except Exception as exc:  # noqa: BLE001  still down: the rows stay spooled
                self._report.store_failed(exc, self.spool)
                self._next_try = time.monotonic() + self._retry_s
                self._retry_s = min(self._retry_s * 2, MAX_RETRY_S)
                return
            self.spool.remove(head)
            self._report.written(len(head.records))
            replayed += 1
        self._retry_s = RETRY_S
        if not self.spool.rows:
            log.info("the prediction log's spool is written (%s)", self.store.where)

    def _handle(self, rows: int) -> None:
        self._progress.handle(rows)



def open_spool(folder: Path, max_bytes: int, dropped: Callable[[str, int, str], None]) -> Spool | None:
    """This process's spool with the rows of processes that did not come back, or None (one WARNING line) where
    it cannot be opened: the log then runs as with PREDICTION_LOG_SPOOL_BYTES=0."""
    try:
        spool = Spool(folder, max_bytes)
    except Exception as exc:  # noqa: BLE001  the log still runs, as with PREDICTION_LOG_SPOOL_BYTES=0
        log.warning("the prediction log runs without a spool (a failed batch is dropped): %s; set "
                    "PREDICTION_LOG_SPOOL_DIR to a writable folder", one_line(exc))
        return None
    try:
        adopted, beyond = spool.adopt()
    except Exception as exc:  # noqa: BLE001  the orphans stay where they are, for the next start
        log.warning("the prediction log could not take the rows of other spools in %s: %s", folder, one_line(exc))
        adopted = beyond = 0
    if beyond:
        dropped(SPOOL_FULL, beyond, f"the spools left by other processes hold more than "
                f"PREDICTION_LOG_SPOOL_BYTES ({spool.max_bytes})")
    if spool.rows:
        log.info("the prediction log's spool %s holds %d rows (%d from processes that did not come back): "
                 "writing them first", spool.path, spool.rows, adopted)
    return spool
