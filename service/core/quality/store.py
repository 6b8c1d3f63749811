"""The prediction log's tables and queries, in SQLAlchemy Core.

SQLAlchemy Core gives one set of tables and queries for the embedded SQLite file and a PostgreSQL shared by
several replicas (psycopg 3 driver), with pooling, instead of two hand-written SQL dialects to keep equal.
Every method is blocking: the writer thread and `asyncio.to_thread` call them, never the event loop.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import (
    Column,
    Double,
    Engine,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    and_,
    case,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError

from service.core.quality.records import PredictionRecord

metadata = MetaData()

predictions = Table(
    "predictions", metadata,
    Column("id", String(36), primary_key=True),
    Column("role", String(8), primary_key=True),  # served | shadow: a shadow answer shares the served one's id
    Column("time", Double, nullable=False),  # Unix time, seconds: one comparable type in both databases
    Column("version", String(64), nullable=False),
    Column("engine", String(32), nullable=False),
    Column("precision", String(16), nullable=False),
    Column("probability", Double, nullable=False),
    Column("label", String(64), nullable=False),
    Column("threshold", Double, nullable=False),
    Column("image_sha256", String(64), nullable=False),
    Column("image_bytes", Integer, nullable=False),
    Column("image", LargeBinary, nullable=True),  # only with PREDICTION_LOG_IMAGES=true
    Index("ix_predictions_time", "time"),
    Index("ix_predictions_version_role", "version", "role"),
)

feedback = Table(
    "feedback", metadata,
    Column("id", String(36), primary_key=True),  # one verdict per prediction: a new one replaces it
    Column("label", String(64), nullable=False),
    Column("time", Double, nullable=False),
    Index("ix_feedback_time", "time"),
)


# The audit of rollout (service/core/quality/gatekeeper.py): one row per promotion or rollback.
decisions = Table(
    "decisions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", Double, nullable=False),
    Column("action", String(16), nullable=False),  # promote | rollback
    Column("previous", String(64), nullable=False),  # the version that served before
    Column("serving", String(64), nullable=False),  # the version that serves after
    Column("decided_by", String(64), nullable=False),  # gate (PROMOTE/ROLLBACK=auto) | operator (POST /admin/promote)
    Column("figures", Text, nullable=False),  # JSON: the gate's verdict at the time (service.core.quality.gate)
    Index("ix_decisions_time", "time"),
)


@dataclass(frozen=True)
class Decision:
    time: float
    action: str
    previous: str
    serving: str
    decided_by: str
    figures: str


@dataclass(frozen=True)
class Served:
    """The served answer a verdict judges."""

    id: str
    version: str
    label: str


@dataclass(frozen=True)
class VersionCounts:
    version: str
    served: int
    shadow: int


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


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.dialect = url.split(":", 1)[0].split("+", 1)[0]
        if self.dialect == "sqlite":
            self.engine: Engine = create_engine(url, connect_args={"check_same_thread": False})
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=4)
        self._ready = False
        self._schema_lock = threading.Lock()

    @property
    def where(self) -> str:
        """The URL without its password, for logs and /quality."""
        return self.engine.url.render_as_string(hide_password=True)

    def ensure_schema(self) -> None:
        """Creates the tables once per process (idempotent: replicas sharing a database may race here)."""
        with self._schema_lock:  # the writer thread and a verdict's thread may both come first
            if self._ready:
                return
            folder = self._sqlite_folder()
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
            try:
                metadata.create_all(self.engine)
            except DBAPIError:  # another process created them between the check and the create: seen now
                metadata.create_all(self.engine)
            self._ready = True

    def _sqlite_folder(self) -> Path | None:
        database = self.engine.url.database if self.dialect == "sqlite" else None
        return Path(database).parent if database and database != ":memory:" else None

    def write(self, records: Sequence[PredictionRecord]) -> None:
        self.ensure_schema()
        with self.engine.begin() as connection:
            connection.execute(insert(predictions), [record.row() for record in records])

    def delete_before(self, cutoff: float) -> int:
        """Drops predictions and verdicts older than `cutoff` (Unix time); the number of predictions dropped."""
        self.ensure_schema()
        with self.engine.begin() as connection:
            gone = connection.execute(delete(predictions).where(predictions.c.time < cutoff)).rowcount
            connection.execute(delete(feedback).where(feedback.c.time < cutoff))
        return gone

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
        """(id, label) pairs in one transaction; a verdict for an id that has one replaces it."""
        self.ensure_schema()
        with self.engine.begin() as connection:
            for id, label in verdicts:
                changed = connection.execute(
                    update(feedback).where(feedback.c.id == id).values(label=label, time=at)
                ).rowcount
                if not changed:
                    try:
                        with connection.begin_nested():
                            connection.execute(insert(feedback).values(id=id, label=label, time=at))
                    except IntegrityError:  # another replica inserted it meanwhile: this one is the newer
                        connection.execute(update(feedback).where(feedback.c.id == id).values(label=label, time=at))

    def recent_verdicts(self, version: str, window: int) -> list[tuple[str, str]]:
        """(predicted, true) labels of the version's last `window` judged answers, newest verdict first."""
        self.ensure_schema()
        query = (
            select(predictions.c.label, feedback.c.label.label("truth"))
            .join(feedback, feedback.c.id == predictions.c.id)
            .where(predictions.c.version == version)
            .order_by(feedback.c.time.desc())
            .limit(window)
        )
        with self.engine.connect() as connection:
            return [(row.label, row.truth) for row in connection.execute(query)]

    def counts(self) -> list[VersionCounts]:
        """Answers logged per version and role."""
        self.ensure_schema()
        query = select(
            predictions.c.version,
            func.sum(case((predictions.c.role == "served", 1), else_=0)).label("served"),
            func.sum(case((predictions.c.role == "shadow", 1), else_=0)).label("shadow"),
        ).group_by(predictions.c.version)
        with self.engine.connect() as connection:
            return [VersionCounts(row.version, int(row.served or 0), int(row.shadow or 0))
                    for row in connection.execute(query)]

    def agreement(self, shadow_version: str) -> tuple[int, int]:
        """(compared, agreed): the shadow version's answers beside the served answers for the same images."""
        self.ensure_schema()
        shadow = predictions.alias("shadow")
        served = predictions.alias("served")
        query = (
            select(func.count(), func.sum(case((shadow.c.label == served.c.label, 1), else_=0)))
            .select_from(shadow.join(served, and_(served.c.id == shadow.c.id, served.c.role == "served")))
            .where(shadow.c.role == "shadow", shadow.c.version == shadow_version)
        )
        with self.engine.connect() as connection:
            compared, agreed = connection.execute(query).one()
        return int(compared or 0), int(agreed or 0)

    # --- the gate's pairs, the audit of rollout, unjudged images expiring ---------------------------------

    def judged_pairs(self, served_version: str, shadow_version: str, since: float) -> list[tuple[str, str, str, int]]:
        """(true label, served label, shadow label, count) over the judged images `served_version` served and
        `shadow_version` scored in shadow, answered at or after `since` (Unix time)."""
        self.ensure_schema()
        shadow = predictions.alias("shadow")
        served = predictions.alias("served")
        # From the verdicts (few) to their answers (many) by primary key. `|| ''` and `+ 0` keep SQLite's planner,
        # which has no statistics, off the version and time indexes that would walk every answer of the version:
        # measured, 300,000 answers and 2,000 verdicts, 0.5-1 s that way, 0.04 s this way. (A verdict is never
        # older than its answer, so `feedback.time >= since` drops nothing.)
        query = (
            select(feedback.c.label, served.c.label, shadow.c.label, func.count())
            .select_from(
                feedback.join(served, and_(served.c.id == feedback.c.id, served.c.role == "served"))
                .join(shadow, and_(shadow.c.id == feedback.c.id, shadow.c.role == "shadow"))
            )
            .where(feedback.c.time >= since, served.c.time + 0 >= since, served.c.version.concat("") == served_version,
                   shadow.c.version.concat("") == shadow_version)
            .group_by(feedback.c.label, served.c.label, shadow.c.label)
        )
        with self.engine.connect() as connection:
            return [(truth, by_served, by_shadow, int(count))
                    for truth, by_served, by_shadow, count in connection.execute(query)]

    def record_decision(self, decision: Decision) -> None:
        self.ensure_schema()
        with self.engine.begin() as connection:
            connection.execute(insert(decisions).values(**decision.__dict__))

    def decisions(self, limit: int = 20) -> list[Decision]:
        """The newest first."""
        self.ensure_schema()
        query = select(*(decisions.c[name] for name in Decision.__dataclass_fields__)).order_by(
            decisions.c.time.desc(), decisions.c.id.desc()
        ).limit(limit)
        with self.engine.connect() as connection:
            return [Decision(*row) for row in connection.execute(query)]

    def forget_unjudged_images(self, cutoff: float, after: float = 0.0) -> int:
        """Drops the bytes of images answered in [after, cutoff) that have no verdict; the rows stay. `after`,
        the previous call's cutoff, keeps each call to the rows the time index finds since then."""
        self.ensure_schema()
        judged = select(feedback.c.id)
        query = (
            update(predictions)
            .where(predictions.c.time >= after, predictions.c.time < cutoff, predictions.c.image.is_not(None),
                   predictions.c.id.not_in(judged))
            .values(image=None)
        )
        with self.engine.begin() as connection:
            return connection.execute(query).rowcount

    def close(self) -> None:
        self.engine.dispose()
