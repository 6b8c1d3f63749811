"""The prediction log's tables and queries, in SQLAlchemy Core.

SQLAlchemy Core gives one set of tables and queries for the embedded SQLite file and a PostgreSQL shared by
several replicas (psycopg 3 driver), with pooling, instead of two hand-written SQL dialects to keep equal.
Every method is blocking: the writer thread and `asyncio.to_thread` call them, never the event loop.

No query of /feedback, /quality or the quality gauges reads more rows than it answers with, whatever the log's
size (tests/service/quality/test_plans.py checks each plan with EXPLAIN on SQLite and PostgreSQL). Measured on
the one-table log: with 1,000,000 rows `GET /quality` took 572 ms and `POST /feedback` 554 ms, with 2,000,000
1,029 and 706 ms, because counting answers grouped every row by version and the accuracy joined every
prediction of the version. So what those figures need is kept as rows are written, in the same transaction:
- `version_counts`: answers per version and role, and a shadow version's answers compared with and agreeing
  with the served answer to the same image (`predictions.agrees`, set when the shadow row is written);
- `judged`: one row per judged answer (served or shadow) with its predicted and true label, indexed by
  (version, time), so a version's last QUALITY_WINDOW verdicts are an index range.
Writes are idempotent (INSERT ... ON CONFLICT DO NOTHING on the primary key, counting only the rows inserted),
so the writer may replay a batch whose commit it never saw acknowledged.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    bindparam,
    create_engine,
    delete,
    event,
    or_,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from service.core.quality.records import PredictionRecord
from service.core.quality.schema import create_schema
from service.core.quality.tables import (
    COUNTED,
    Served,
    VersionCounts,
    feedback,
    judged,
    predictions,
    version_counts,
)

__all__ = ["Served", "Store", "VersionCounts", "feedback", "predictions", "sqlite_url"]


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'predictions.sqlite3'}"


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    # WAL: readers (/quality, /feedback) never block the writer thread, and several local processes may share
    # the file; NORMAL is durable at each checkpoint, which WAL makes safe from corruption.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _deltas(rows: Iterable[Any], sign: int) -> dict[str, list[int]]:
    """(version, role, agrees) rows -> per version [served, shadow, compared, agreed], times `sign`."""
    deltas: dict[str, list[int]] = {}
    for version, role, agrees in rows:
        delta = deltas.setdefault(version, [0, 0, 0, 0])
        delta[0 if role == "served" else 1] += sign
        if agrees is not None:
            delta[2] += sign
            delta[3] += sign if agrees else 0
    return deltas


def _insert_into(dialect: str, table: Table) -> Any:
    """INSERT with ON CONFLICT clauses: the same construct in both dialects' modules."""
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


@functools.cache
def _writes(dialect: str) -> tuple[Any, Any]:
    """The writer's two statements, built once per dialect: (the rows not logged yet, returning what was inserted;
    one version's counts added). Built per batch instead, SQLAlchemy's statement construction and cache keys were
    three quarters of the writer's CPU: 1.6 ms per 12-row batch (BENCHMARKS.md)."""
    rows = (_insert_into(dialect, predictions).on_conflict_do_nothing()
            .returning(predictions.c.id, predictions.c.version, predictions.c.role, predictions.c.agrees))
    counts = _insert_into(dialect, version_counts).values(
        version=bindparam("version"), **{name: bindparam(name) for name in COUNTED}
    )
    counts = counts.on_conflict_do_update(
        index_elements=[version_counts.c.version],
        set_={name: version_counts.c[name] + counts.excluded[name] for name in COUNTED},
    )
    return rows, counts


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.dialect = url.split(":", 1)[0].split("+", 1)[0]
        if self.dialect == "sqlite":
            self.engine: Engine = create_engine(url, connect_args={"check_same_thread": False})
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            # connect_timeout: a database host that drops packets would otherwise hold the writer's replay (and
            # a verdict's thread) for the TCP timeout, minutes; refused connections fail at once anyway.
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=4,
                                        connect_args={"connect_timeout": 5})
        self._ready = False
        self._schema_lock = threading.Lock()

    @property
    def where(self) -> str:
        """The URL without its password, for logs and /quality."""
        return self.engine.url.render_as_string(hide_password=True)

    def _insert(self, table: Table) -> Any:
        return _insert_into(self.dialect, table)

    def ensure_schema(self) -> None:
        """Creates the tables once per process (idempotent: replicas sharing a database may race here); a log
        written before the summary tables existed gets them filled, once, in the same transaction."""
        with self._schema_lock:  # the writer thread and a verdict's thread may both come first
            if self._ready:
                return
            folder = self._sqlite_folder()
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
            try:
                create_schema(self.engine)
            except DBAPIError:  # another process created them between the check and the create: seen now
                create_schema(self.engine)
            self._ready = True

    def _sqlite_folder(self) -> Path | None:
        database = self.engine.url.database if self.dialect == "sqlite" else None
        return Path(database).parent if database and database != ":memory:" else None

    def write(self, records: Sequence[PredictionRecord]) -> int:
        """One transaction: the rows not logged yet, their counts, and a late shadow answer's verdict; the number
        of rows inserted (a row already logged, by an earlier try whose commit was not seen, is skipped)."""
        if not records:
            return 0
        self.ensure_schema()
        rows = [{**record.row(), "agrees": None} for record in records]
        with self.engine.begin() as connection:
            shadows = [row for row in rows if row["role"] == "shadow"]
            if shadows:
                served = {row["id"]: row["label"] for row in rows if row["role"] == "served"}
                elsewhere = [row["id"] for row in shadows if row["id"] not in served]
                if elsewhere:
                    served.update({r.id: r.label for r in connection.execute(
                        select(predictions.c.id, predictions.c.label)
                        .where(predictions.c.id.in_(elsewhere), predictions.c.role == "served")
                    )})
                for row in shadows:
                    row["agrees"] = row["label"] == served[row["id"]] if row["id"] in served else None
            inserted = connection.execute(_writes(self.dialect)[0], rows).all()
            self._add_counts(connection, _deltas(((r.version, r.role, r.agrees) for r in inserted), +1))
            late = {r.id: r for r in inserted if r.role == "shadow"}
            if late:  # a verdict that came before the shadow scored the image
                verdicts = connection.execute(
                    select(feedback.c.id, feedback.c.label, feedback.c.time).where(feedback.c.id.in_(list(late)))
                ).all()
                labels = {row["id"]: row["label"] for row in shadows}
                if verdicts:
                    connection.execute(self._insert(judged).on_conflict_do_nothing(), [
                        {"id": v.id, "role": "shadow", "version": late[v.id].version, "predicted": labels[v.id],
                         "truth": v.label, "time": v.time} for v in verdicts
                    ])
        return len(inserted)

    def _add_counts(self, connection: Connection, deltas: dict[str, list[int]]) -> None:
        # In version order, so two replicas' writers lock the same rows in the same order (no deadlock).
        for version in sorted(deltas):
            connection.execute(_writes(self.dialect)[1],
                               {"version": version, **dict(zip(COUNTED, deltas[version], strict=True))})

    def delete_chunk(self, cutoff: float, rows: int) -> int:
        """At most `rows` predictions, verdicts and judged answers older than `cutoff` (Unix time), oldest first,
        in one short transaction (the writer runs it between batches); the number deleted, 0 once none is left."""
        self.ensure_schema()
        with self.engine.begin() as connection:
            # The ids first, then a delete by primary key alone: an IN (subquery) let the planner hash-join the
            # whole table (PostgreSQL did), SQLite scans for a row-value IN, and with the time condition repeated
            # PostgreSQL walked every expired row by the time index. No ORDER BY: any expired rows will do. A
            # shadow row goes with its served row, though scored up to a second later.
            deleted = 0
            for table in (predictions, feedback):
                ids = list(connection.scalars(select(table.c.id).where(table.c.time < cutoff).limit(rows)))
                if not ids:
                    continue
                if table is predictions:
                    gone = connection.execute(
                        delete(predictions).where(predictions.c.id.in_(ids))
                        .returning(predictions.c.version, predictions.c.role, predictions.c.agrees)
                    ).all()
                    self._add_counts(connection, _deltas(((r.version, r.role, r.agrees) for r in gone), -1))
                    deleted += len(gone)
                    connection.execute(delete(judged).where(judged.c.id.in_(ids)))  # an answer no longer judged
                else:  # a verdict and the judged rows it made
                    deleted += connection.execute(delete(feedback).where(feedback.c.id.in_(ids))).rowcount
                    connection.execute(delete(judged).where(judged.c.id.in_(ids)))
        return deleted

    def delete_before(self, cutoff: float, chunk_rows: int = 500) -> int:
        """Everything older than `cutoff`, chunk by chunk; the rows deleted."""
        total = 0
        while gone := self.delete_chunk(cutoff, chunk_rows):
            total += gone
        return total

    def served(self, ids: Iterable[str]) -> dict[str, Served]:
        self.ensure_schema()
        wanted = list(ids)
        query = select(predictions.c.id, predictions.c.version, predictions.c.label).where(
            predictions.c.id.in_(wanted), predictions.c.role == "served"
        )
        with self.engine.connect() as connection:
            return {row.id: Served(row.id, row.version, row.label) for row in connection.execute(query)}

    def versions_of(self, ids: Iterable[str]) -> set[str]:
        """Every version (served or shadow) with an answer for one of `ids`."""
        query = select(predictions.c.version).where(predictions.c.id.in_(list(ids))).distinct()
        with self.engine.connect() as connection:
            return set(connection.scalars(query))

    def give_verdicts(self, verdicts: Sequence[tuple[str, str]], at: float) -> None:
        """(id, label) pairs in one transaction; a verdict for an id that has one replaces it (the last of a
        list that names an id twice)."""
        self.ensure_schema()
        latest = dict(verdicts)
        if not latest:
            return
        with self.engine.begin() as connection:
            upsert = self._insert(feedback)
            connection.execute(
                upsert.on_conflict_do_update(index_elements=[feedback.c.id],
                                             set_={"label": upsert.excluded.label, "time": upsert.excluded.time}),
                [{"id": id, "label": label, "time": at} for id, label in latest.items()],
            )
            answers = connection.execute(
                select(predictions.c.id, predictions.c.role, predictions.c.version, predictions.c.label)
                .where(predictions.c.id.in_(list(latest)))
            ).all()
            if answers:
                upsert = self._insert(judged)
                connection.execute(
                    upsert.on_conflict_do_update(index_elements=[judged.c.id, judged.c.role],
                                                 set_={"truth": upsert.excluded.truth, "time": upsert.excluded.time}),
                    [{"id": a.id, "role": a.role, "version": a.version, "predicted": a.label, "truth": latest[a.id],
                      "time": at} for a in answers],
                )

    def recent_verdicts(self, version: str, window: int) -> list[tuple[str, str]]:
        """(predicted, true) labels of the version's last `window` judged answers, newest verdict first."""
        self.ensure_schema()
        query = (
            select(judged.c.predicted, judged.c.truth).where(judged.c.version == version)
            .order_by(judged.c.time.desc()).limit(window)
        )
        with self.engine.connect() as connection:
            return [(row.predicted, row.truth) for row in connection.execute(query)]

    def counts(self) -> list[VersionCounts]:
        """Answers logged per version and role (kept as rows are written and deleted: no scan of the log)."""
        self.ensure_schema()
        query = select(version_counts.c.version, version_counts.c.served, version_counts.c.shadow).where(
            or_(version_counts.c.served > 0, version_counts.c.shadow > 0)
        )
        with self.engine.connect() as connection:
            return [VersionCounts(row.version, int(row.served), int(row.shadow)) for row in connection.execute(query)]

    def agreement(self, shadow_version: str) -> tuple[int, int]:
        """(compared, agreed): the shadow version's answers beside the served answers for the same images."""
        self.ensure_schema()
        query = select(version_counts.c.compared, version_counts.c.agreed).where(
            version_counts.c.version == shadow_version
        )
        with self.engine.connect() as connection:
            row = connection.execute(query).one_or_none()
        return (int(row.compared), int(row.agreed)) if row else (0, 0)

    def close(self) -> None:
        self.engine.dispose()
