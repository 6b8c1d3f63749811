"""The prediction log's schema: created once per process (idempotently: replicas sharing a database may race),
and a log written before the summary tables existed upgraded once, in the same transaction."""

from __future__ import annotations

from sqlalchemy import Connection, Engine, case, func, insert, inspect, select, text, update

from service.core.quality.tables import COUNTED, feedback, judged, metadata, predictions, version_counts


def create_schema(engine: Engine) -> None:
    """The tables, and the summary tables filled from a log written before they existed (once)."""
    with engine.begin() as connection:
        before = set(inspect(connection).get_table_names())
        metadata.create_all(connection)
        if "predictions" in before and "version_counts" not in before:
            _upgrade(connection)


def _upgrade(connection: Connection) -> None:
    """One pass over a log written before the summary tables (a full scan, once, at the first open)."""
    # Served counts by version when they were grouped from the log; now it only costs every write, and the
    # planner took it for a lookup by id.
    connection.execute(text("DROP INDEX IF EXISTS ix_predictions_version_role"))
    columns = {column["name"] for column in inspect(connection).get_columns("predictions")}
    if "agrees" not in columns:
        connection.execute(text("ALTER TABLE predictions ADD COLUMN agrees BOOLEAN"))
    served = predictions.alias("served")
    served_label = select(served.c.label).where(served.c.id == predictions.c.id, served.c.role == "served")
    connection.execute(update(predictions).where(predictions.c.role == "shadow")
                       .values(agrees=predictions.c.label == served_label.scalar_subquery()))
    agrees = predictions.c.agrees
    connection.execute(insert(version_counts).from_select(
        ["version", *COUNTED],
        select(
            predictions.c.version,
            func.sum(case((predictions.c.role == "served", 1), else_=0)),
            func.sum(case((predictions.c.role == "shadow", 1), else_=0)),
            func.sum(case((agrees.is_not(None), 1), else_=0)),
            func.sum(case((agrees.is_(True), 1), else_=0)),
        ).group_by(predictions.c.version),
    ))
    connection.execute(insert(judged).from_select(
        ["id", "role", "version", "predicted", "truth", "time"],
        select(predictions.c.id, predictions.c.role, predictions.c.version, predictions.c.label,
               feedback.c.label, feedback.c.time).join(feedback, feedback.c.id == predictions.c.id),
    ))
