"""The prediction log's spool: rows the store did not take wait here, on local disk, until it takes them again.

An embedded SQLite file rather than an append-only journal: appending a batch and removing the replayed head
are each one transaction, so a process killed at any instant leaves whole rows in order and nothing half
written, with no framing, checksums or truncate-on-recovery of our own; the head is removed by sequence number
without rewriting the file; and sqlite3 is in the standard library. It is written only while the store fails
(one fsync per batch, synchronous=FULL, so a spooled row also survives the machine's power cut).

The file is bounded by PREDICTION_LOG_SPOOL_BYTES of row payload (JSON); a row beyond the bound is refused, and
the writer counts it dropped. Each process claims a slot (prediction-log-spool.<n>.sqlite3 beside a .lock file
held with flock), so processes sharing DATA_DIR never share a spool, and a process started after a crash takes
the free slot with the rows its predecessor left, and writes them. It also adopts the rows of every other slot
no live process holds (replicas that crashed and did not come back), so no spool is left behind.
"""

from __future__ import annotations

import base64
import fcntl
import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from service.core.quality.records import PredictionRecord

# Processes sharing one folder (replicas on one machine); one more than that finds no slot and runs without.
SLOTS = 64
ADOPT_ROWS = 5000  # moved from another slot per transaction (memory: ~2 MB)


class SpoolUnavailableError(RuntimeError):
    """The spool's folder cannot be written (read-only, no slot free)."""


@dataclass(frozen=True)
class Spooled:
    """The spool's head: rows in the order they were spooled, up to sequence number `last`."""

    records: list[PredictionRecord]
    last: int
    size: int  # payload bytes


def _payload(record: PredictionRecord) -> bytes:
    row = record.row()
    if row["image"] is not None:
        row["image"] = base64.b64encode(row["image"]).decode()  # type: ignore[arg-type]
    return json.dumps(row, separators=(",", ":")).encode()


def _record(payload: bytes) -> PredictionRecord:
    row = json.loads(payload)
    if row.get("image") is not None:
        row["image"] = base64.b64decode(row["image"])
    return PredictionRecord(**row)


class Spool:
    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._lock = self._claim(folder)
        self.path = folder / f"{Path(self._lock.name).stem}.sqlite3"
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, "
            "row BLOB NOT NULL)"
        )
        rows, size, since = self._db.execute("SELECT count(*), coalesce(sum(length(row)), 0), min(at) FROM spool"
                                             ).fetchone()
        self.rows: int = rows  # read by the metrics' scrape: plain ints, written by the writer thread only
        self.bytes: int = size
        self.since: float | None = since  # Unix time the oldest waiting row was spooled

    @staticmethod
    def _claim(folder: Path) -> IO[bytes]:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolUnavailableError(f"cannot create the spool's folder {folder}: {exc}") from exc
        for slot in range(SLOTS):
            lock = (folder / f"prediction-log-spool.{slot}.lock").open("ab")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            return lock
        raise SpoolUnavailableError(f"all {SLOTS} spool slots in {folder} are held by other processes")

    def adopt(self) -> tuple[int, int]:
        """Moves the rows of every other slot that no process holds into this spool, up to the bound; (rows
        taken, rows beyond the bound). A crash between the two transactions leaves a row in both: the store
        skips the second."""
        taken = beyond = 0
        folder = self.path.parent
        for other in sorted(folder.glob("prediction-log-spool.*.sqlite3")):
            lock_path = other.with_suffix(".lock")
            if other == self.path or not lock_path.exists():
                continue
            with lock_path.open("ab") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live process's
                orphan = sqlite3.connect(other, isolation_level=None)
                try:
                    while rows := orphan.execute(f"SELECT seq, row FROM spool ORDER BY seq LIMIT {ADOPT_ROWS}"
                                                 ).fetchall():
                        kept = self.append([_record(payload) for _, payload in rows])
                        taken, beyond = taken + kept, beyond + len(rows) - kept
                        orphan.execute("DELETE FROM spool WHERE seq <= ?", (rows[-1][0],))
                except sqlite3.OperationalError as exc:
                    if "no such table" not in str(exc):  # else: nothing was ever spooled there
                        raise
                finally:
                    orphan.close()
        return taken, beyond

    def append(self, records: Sequence[PredictionRecord]) -> int:
        """Spools the records in order, in one transaction, up to the bound; how many it took (a prefix)."""
        payloads = []
        size = self.bytes
        for record in records:
            payload = _payload(record)
            if size + len(payload) > self.max_bytes:
                break
            payloads.append(payload)
            size += len(payload)
        if not payloads:
            return 0
        now = time.time()
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO spool (at, row) VALUES (?, ?)", [(now, p) for p in payloads])
        self.rows += len(payloads)
        self.bytes = size
        if self.since is None:
            self.since = now
        return len(payloads)

    def head(self, rows: int) -> Spooled | None:
        found = self._db.execute("SELECT seq, row FROM spool ORDER BY seq LIMIT ?", (rows,)).fetchall()
        if not found:
            return None
        return Spooled([_record(payload) for _, payload in found], found[-1][0], sum(len(p) for _, p in found))

    def remove(self, head: Spooled) -> None:
        """Removes a head once the store has taken it."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM spool WHERE seq <= ?", (head.last,))
        self.rows -= len(head.records)
        self.bytes -= head.size
        first = self._db.execute("SELECT at FROM spool ORDER BY seq LIMIT 1").fetchone()
        self.since = first[0] if first else None

    def close(self) -> None:
        self._db.close()
        self._lock.close()
