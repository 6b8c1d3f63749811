"""The prediction log's tables (SQLAlchemy Core), one schema for the SQLite file and PostgreSQL; the queries are
`service.core.quality.store`'s (the log, verdicts, counts) and `service.core.quality.evidence`'s (the gate's
pairs, the audit of rollout)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

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
    # A shadow row: whether its label is the served answer's (null: no served row was found when it was written).
    Column("agrees", Boolean, nullable=True),
    Index("ix_predictions_time", "time"),
)

feedback = Table(
    "feedback", metadata,
    Column("id", String(36), primary_key=True),  # one verdict per prediction: a new one replaces it
    Column("label", String(64), nullable=False),
    Column("time", Double, nullable=False),
    Index("ix_feedback_time", "time"),
)

# Every answer (served or shadow) that has a verdict, with both labels: the quality figures read only this.
judged = Table(
    "judged", metadata,
    Column("id", String(36), primary_key=True),
    Column("role", String(8), primary_key=True),
    Column("version", String(64), nullable=False),
    Column("predicted", String(64), nullable=False),
    Column("truth", String(64), nullable=False),
    Column("time", Double, nullable=False),  # the verdict's (feedback.time)
    # No index on time alone: retention deletes a verdict's judged rows by its id, and PostgreSQL walked a time
    # index backwards, filtering by version, rather than take this one.
    Index("ix_judged_version_time", "version", "time"),
)

version_counts = Table(
    "version_counts", metadata,
    Column("version", String(64), primary_key=True),
    Column("served", BigInteger, nullable=False, default=0),
    Column("shadow", BigInteger, nullable=False, default=0),
    Column("compared", BigInteger, nullable=False, default=0),  # shadow rows written beside a served row
    Column("agreed", BigInteger, nullable=False, default=0),  # of those, with the served row's label
)

COUNTED = ("served", "shadow", "compared", "agreed")


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
