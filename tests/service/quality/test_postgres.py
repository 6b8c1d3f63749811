"""A real PostgreSQL (initdb + pg_ctl in a temporary folder) shared by two real service processes."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from bench.postgres import Postgres
from bench.quality_faults import outage
from bench.servers import Server, service_spec
from service.core.quality.evidence import forget_unjudged_images, judged_pairs, last_decisions, record_decision
from service.core.quality.records import Answerer, ImageFacts, PredictionRecord
from service.core.quality.store import Store, predictions
from service.core.quality.tables import Decision
from tests.service.helpers import gray_png
from tests.service.quality.test_gatekeeper import write_pairs

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def postgres_url(postgres: Postgres) -> str:
    return postgres.url


def test_two_service_processes_share_one_log_in_postgres(
    postgres_url: str, tiny_model_path: Path, tmp_path: Path
) -> None:
    env = {"PREDICTION_LOG_URL": postgres_url, "LOG_LEVEL": "warning"}
    with Server(service_spec("a", tiny_model_path, env), tmp_path) as a, \
            Server(service_spec("b", tiny_model_path, env), tmp_path) as b:
        ids = []
        for level in (10, 200, 30, 220):
            response = httpx.post(f"{a.url}/predict", files={"file": ("c.png", gray_png(level), "image/png")})
            assert response.status_code == 200, response.text
            ids.append(response.json()["predictions"][0]["id"])
        # Logged by a, judged through b: a's writer commits within milliseconds; b finds the rows then.
        verdicts = [{"id": id, "label": "functional"} for id in ids]
        for _ in range(100):
            judged = httpx.post(f"{b.url}/feedback", json=verdicts)
            if judged.status_code != 404:
                break
        assert judged.status_code == 200, judged.text
        response = httpx.post(f"{b.url}/predict", files={"file": ("c.png", gray_png(40), "image/png")})
        ids.append(response.json()["predictions"][0]["id"])
        report = httpx.get(f"{a.url}/quality").json()
        (version,) = report["versions"]
        assert version["verdicts"] == 4
        assert report["log"]["store"].startswith("postgresql+psycopg://quality@127.0.0.1")
        assert a.terminate() == 0
        assert b.terminate() == 0
    with Store(postgres_url).engine.connect() as connection:
        logged = set(connection.scalars(select(predictions.c.id)))
    assert logged == set(ids), "every answered prediction of both processes is in the log after a graceful stop"


@pytest.mark.parametrize("kill", [False, True], ids=["restarted", "service-killed"])
def test_no_answered_row_is_lost_while_postgres_is_stopped_and_started_under_load(
    postgres: Postgres, tiny_model_path: Path, tmp_path: Path, kill: bool
) -> None:
    result = outage(postgres, f"outage_{int(kill)}", tiny_model_path, tmp_path, outage_s=3.0, clients=4,
                    kill=kill, before_s=1.0, after_s=1.0, catch_up_timeout_s=60)
    assert result.failed == 0, result
    assert result.answered > 20, result
    assert result.spooled_peak > 0, result
    assert (result.lost, result.dropped) == (0, 0), result


def test_the_gates_queries_and_the_audit_run_on_postgres(postgres_url: str) -> None:
    store = Store(postgres_url)
    write_pairs(store, "7", "8", wins=3, at=1000.0)
    write_pairs(store, "7", "8", wins=2, at=3000.0)
    assert judged_pairs(store, "7", "8", since=0.0) == [("defective", "functional", "defective", 5)]
    assert judged_pairs(store, "7", "8", since=2000.0) == [("defective", "functional", "defective", 2)]
    record_decision(store, Decision(2000.0, "promote", "7", "8", "gate", '{"evidence": 21.0}'))
    assert last_decisions(store, limit=1) == [Decision(2000.0, "promote", "7", "8", "gate", '{"evidence": 21.0}')]
    record = PredictionRecord.of("pg-unjudged", "served", Answerer("7", "onnxruntime", "fp32",
                                 ("functional", "defective")), 0.1, "functional", 0.5, ImageFacts.of(b"x", keep=True))
    store.write([PredictionRecord(**{**record.__dict__, "time": 500.0})])
    assert forget_unjudged_images(store, cutoff=600.0) == 1
    store.close()
