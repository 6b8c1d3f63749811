"""The prediction log's retention: expired rows deleted a chunk at a time between the writer's batches, so the
writer is never held longer than a batch (one transaction over every expired row held it for as long as the
delete took)."""

from __future__ import annotations

import logging
import time

from service.core.failures import one_line
from service.core.quality.store import Store

log = logging.getLogger(__name__)


class Retention:
    def __init__(self, store: Store, retention_s: float, chunk_rows: int) -> None:
        self.store = store
        self.retention_s = retention_s
        self.chunk_rows = chunk_rows
        # A pass about every tenth of the retention time, at most once a minute.
        self._every_s = min(max(retention_s / 10, 1.0), 60.0) if retention_s > 0 else None
        self._next = 0.0
        self._cutoff: float | None = None  # set while a pass has chunks left

    @property
    def under_way(self) -> bool:
        return self._cutoff is not None

    def due_in(self) -> float | None:
        """Seconds until the next pass (0 while one is under way); None without retention."""
        if self._cutoff is not None:
            return 0.0
        return max(self._next - time.monotonic(), 0.0) if self._every_s is not None else None

    def step(self) -> None:
        """One chunk when a pass is due or under way."""
        if self._every_s is None:
            return
        if self._cutoff is None:
            if time.monotonic() < self._next:
                return
            self._next = time.monotonic() + self._every_s
            self._cutoff = time.time() - self.retention_s
        try:
            if not self.store.delete_chunk(self._cutoff, self.chunk_rows):
                self._cutoff = None
        except Exception as exc:  # noqa: BLE001  retention is retried at the next period
            self._cutoff = None
            log.warning("the prediction log's retention delete failed: %s", one_line(exc))
