"""The prediction log's writer: the request path only does `put_nowait` on a bounded queue; one thread drains it
into the store in batches.

A full queue (the store slower than traffic) or a failing store drops rows, counted in
prediction_log_dropped_total{reason} with one WARNING line per reason until writing works again, so the service
keeps answering at full speed while the store is slow or down. `stop()` writes every queued row before it
returns (graceful shutdown loses nothing while the store is up).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from service.core.failures import one_line
from service.core.quality.records import PredictionRecord
from service.core.quality.store import Store

log = logging.getLogger(__name__)

QUEUE_FULL = "queue_full"
STORE_ERROR = "store_error"
# Rows per transaction. Measured (SQLite, WAL): a one-row transaction costs 0.5 ms, a row in a 50-row one
# 0.05 ms; the writer holds the GIL for most of it, so at 300 images/s one-row transactions would take ~15 % of
# a core from serving. So the writer lingers LINGER_S after a row arrives, to write what follows with it.
BATCH_ROWS = 500
LINGER_S = 0.05
_STOP = object()


class PredictionLog:
    def __init__(
        self, store: Store, *, max_queue: int, retention_s: float,
        on_drop: Callable[[str, int], None] = lambda reason, rows: None,
        on_write: Callable[[int], None] = lambda rows: None,
    ) -> None:
        self.store = store
        self.retention_s = retention_s
        self._queue: queue.Queue[object] = queue.Queue(max_queue)
        self._on_drop = on_drop
        self._on_write = on_write
        self._warned: set[str] = set()
        self._thread: threading.Thread | None = None
        self._handled = threading.Condition()
        self._count_lock = threading.Lock()  # the event loop and the shadow thread both put rows
        self._put = 0  # rows offered so far
        self._done = 0  # rows written or dropped so far
        # Retention runs about every tenth of the retention time, at most once a minute.
        self._purge_every_s = min(max(retention_s / 10, 1.0), 60.0) if retention_s > 0 else None
        self._next_purge = 0.0

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()

    def put(self, record: PredictionRecord) -> None:
        """Never blocks: a full queue drops the row and counts it."""
        with self._count_lock:
            self._put += 1
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self._dropped(QUEUE_FULL, 1, "the prediction log's queue is full (the store is slower than traffic)")

    def wait_written(self, timeout_s: float) -> bool:
        """Waits until every row offered before the call is written or dropped (a verdict for an answer just given)."""
        target = self._put
        with self._handled:
            return self._handled.wait_for(lambda: self._done >= target, timeout_s)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Writes what is queued, then ends the thread."""
        if self._thread is None:
            return
        try:
            self._queue.put(_STOP, timeout=timeout_s)
        except queue.Full:
            log.warning("the prediction log's writer did not take the stop marker in %g s", timeout_s)
        self._thread.join(timeout_s)
        self._thread = None

    def _run(self) -> None:
        stopping = False
        while not stopping:
            try:
                first = self._queue.get(timeout=self._purge_every_s)
            except queue.Empty:
                self._purge()
                continue
            if first is not _STOP:
                time.sleep(LINGER_S)
            batch: list[PredictionRecord] = []
            item = first
            while True:
                if item is _STOP:
                    stopping = True
                else:
                    batch.append(item)  # type: ignore[arg-type]
                if len(batch) >= BATCH_ROWS:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._write(batch)
            if self._queue.empty():
                self._warned.discard(QUEUE_FULL)
            self._purge()
            if stopping and not self._queue.empty():
                stopping = False  # rows put after the marker (a request answered during shutdown) go too

    def _write(self, batch: list[PredictionRecord]) -> None:
        try:
            self.store.write(batch)
        except Exception as exc:  # noqa: BLE001  any store failure drops the batch; the writer lives on
            self._dropped(STORE_ERROR, len(batch), f"the prediction log's store failed: {one_line(exc)}")
        else:
            self._on_write(len(batch))
            if STORE_ERROR in self._warned:
                self._warned.discard(STORE_ERROR)
                log.info("the prediction log writes again (%s)", self.store.where)
        self._handle(len(batch))

    def _handle(self, rows: int) -> None:
        with self._handled:
            self._done += rows
            self._handled.notify_all()

    def _dropped(self, reason: str, rows: int, why: str) -> None:
        self._on_drop(reason, rows)
        if reason == QUEUE_FULL:
            self._handle(rows)
        if reason not in self._warned:
            self._warned.add(reason)
            log.warning("%s: dropping rows, counted in prediction_log_dropped_total{reason=\"%s\"}", why, reason)

    def _purge(self) -> None:
        if self._purge_every_s is None or time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + self._purge_every_s
        try:
            self.store.delete_before(time.time() - self.retention_s)
        except Exception as exc:  # noqa: BLE001  retention is retried at the next period
            log.warning("the prediction log's retention delete failed: %s", one_line(exc))
