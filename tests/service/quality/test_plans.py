"""Every query of the log's writer, /feedback, /quality and the quality gauges is served by an index: each
statement the store runs is explained (EXPLAIN QUERY PLAN on SQLite, EXPLAIN on PostgreSQL with sequential scans
priced out) and no plan reads a log table whole or sorts it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from bench.quality_faults import fresh_database
from service.core.quality.records import Answerer, ImageFacts, PredictionRecord, new_id
from service.core.quality.store import Store, sqlite_url

LOG_TABLES = ("predictions", "feedback", "judged")
SERVED = Answerer("1", "onnxruntime", "fp32", ("functional", "defective"))
SHADOW = Answerer("2", "onnxruntime", "fp32", ("functional", "defective"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = sqlite_url(tmp_path)
    else:
        url = fresh_database(request.getfixturevalue("postgres"), "plans")
    store = Store(url)
    yield store
    store.close()


def fill(store: Store, answers: int) -> list[str]:
    """`answers` served answers over five versions (the last one "1"), half of them also scored in shadow by
    version "2" an hour ago, a third judged; PostgreSQL's statistics taken as autovacuum would."""
    ids = [new_id() for _ in range(answers)]
    old = time.time() - 3600
    versions = [Answerer(str(v), "onnxruntime", "fp32", SERVED.class_names) for v in (5, 4, 3, 6, 1)]
    store.write([PredictionRecord.of(id, "served", versions[n * len(versions) // answers], 0.7, "defective", 0.5,
                                     ImageFacts.of(b"x")) for n, id in enumerate(ids)])
    store.write([PredictionRecord(**{**PredictionRecord.of(id, "shadow", SHADOW, 0.2, "functional", 0.5,
                                                           ImageFacts.of(b"x")).row(), "time": old})
                 for id in ids[: answers // 2]])
    store.give_verdicts([(id, "defective") for id in ids[::3]], time.time())
    if store.dialect == "postgresql":  # the planner's statistics, as autovacuum keeps them on a real log
        with store.engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE")
    return ids


def statements(store: Store, call: Any) -> list[tuple[str, Any]]:
    """The statements (not executemany batches) the store ran during `call()`, with their parameters."""
    seen: list[tuple[str, Any]] = []

    def listen(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if not executemany and not statement.lstrip().upper().startswith(("INSERT", "PRAGMA", "SELECT 1")):
            seen.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", listen)
    try:
        call()
    finally:
        event.remove(store.engine, "before_cursor_execute", listen)
    return seen


def plan(store: Store, statement: str, parameters: Any) -> str:
    with store.engine.connect() as connection:
        if store.dialect == "sqlite":
            rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
            return "\n".join(row[3] for row in rows)
        connection.exec_driver_sql("SET enable_seqscan = off")  # a small table's seq scan is cheapest otherwise
        return "\n".join(row[0] for row in connection.exec_driver_sql(f"EXPLAIN {statement}", parameters))


def full_reads(store: Store, statement: str, text: str) -> list[str]:
    """The lines of a plan that read a log table whole (a scan, or an index walked without a condition), or
    sort rows that an index would give in order."""
    bad = []
    lines = text.splitlines()
    for n, line in enumerate(lines):
        if store.dialect == "sqlite":
            if any(line.startswith(f"SCAN {table}") for table in LOG_TABLES) or "TEMP B-TREE FOR ORDER BY" in line:
                bad.append(line)
            continue
        step = line.strip().removeprefix("->  ")
        depth = len(line) - len(line.lstrip())
        below = []  # the node's own detail lines (Index Cond, Filter, ...), up to its first child
        for detail in lines[n + 1:]:
            if len(detail) - len(detail.lstrip()) <= depth or detail.strip().startswith("->"):
                break
            below.append(detail.strip())
        whole = any(f"Seq Scan on {table}" in step for table in LOG_TABLES)
        unbounded = "Index" in step and "Scan" in step and not any(d.startswith("Index Cond") for d in below)
        sorted_here = step.startswith("Sort") and "ORDER BY" in statement
        if whole or unbounded or sorted_here:
            bad.append(line)
    return bad


def test_every_query_of_the_log_is_served_by_an_index(store: Store) -> None:
    ids = fill(store, 3000)[-300:]
    late = new_id()
    calls = {
        "write (served and shadow rows, a shadow row after its verdict)": lambda: store.write([
            PredictionRecord.of(late, "served", SERVED, 0.7, "defective", 0.5, ImageFacts.of(b"y")),
            PredictionRecord.of(ids[0], "shadow", SHADOW, 0.7, "defective", 0.5, ImageFacts.of(b"x")),
            PredictionRecord.of(ids[3], "shadow", SHADOW, 0.7, "defective", 0.5, ImageFacts.of(b"x")),
        ]),
        "served (POST /feedback)": lambda: store.served(ids[:10]),
        "give_verdicts (POST /feedback)": lambda: store.give_verdicts([(id, "functional") for id in ids[:10]],
                                                                      time.time()),
        "versions_of (POST /feedback's gauges)": lambda: store.versions_of(ids[:10]),
        "recent_verdicts (GET /quality, the gauges)": lambda: store.recent_verdicts("1", 50),
        "counts (GET /quality)": store.counts,
        "agreement (GET /quality)": lambda: store.agreement("2"),
        "delete_chunk (retention)": lambda: store.delete_chunk(time.time() - 60, 50),
    }
    problems = {}
    for name, call in calls.items():
        ran = statements(store, call)
        assert ran or name.startswith("write"), f"{name} ran no statement"
        for statement, parameters in ran:
            bad = full_reads(store, statement, plan(store, statement, parameters))
            if bad:
                problems[f"{name}: {statement}"] = bad
    assert problems == {}


@pytest.mark.parametrize("statement", [
    "SELECT count(*) FROM predictions WHERE label = 'defective'",
    "SELECT id FROM judged ORDER BY predicted LIMIT 5",
    "SELECT id FROM predictions ORDER BY id, role",  # the whole primary key index, in order
])
def test_the_plan_check_sees_a_full_read(store: Store, statement: str) -> None:
    fill(store, 20)
    assert full_reads(store, statement, plan(store, statement, {} if store.dialect == "postgresql" else ()))
