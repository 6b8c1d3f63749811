"""The prediction log through a database outage: PostgreSQL stopped (`pg_ctl stop -m immediate`) under clients
posting /predict, started again, optionally with the service SIGKILLed during the outage and restarted after it;
then every answered id is looked for in the log. Used by tests/service/quality/test_postgres.py (seconds) and
`python -m bench.quality --faults` (10 s and 5 minutes).
"""

from __future__ import annotations

import io
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, select, text

from bench.postgres import Postgres
from bench.servers import Server, service_spec


def metrics(url: str) -> dict[str, float]:
    """Every sample of GET /metrics, keyed `name{label=value,...}`."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}"] = sample.value
    return values


def metric_sum(values: Mapping[str, float], name: str) -> float:
    """The samples of `name` summed over their labels; `name{label=value` narrows it to those labels."""
    prefix = name if "{" in name else name + "{"
    return sum(v for k, v in values.items() if k.startswith(prefix))


def gray_png(level: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (100, 100), level).save(out, format="PNG")
    return out.getvalue()


class PredictLoad:
    """`clients` threads posting one image each to /predict, one request after another, until stopped; every
    answered id is kept and every outcome counted."""

    def __init__(self, url: str, clients: int) -> None:
        self.url = url
        self.ids: list[str] = []
        self.outcomes: Counter[str] = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(clients)]

    def __enter__(self) -> PredictLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _client(self, n: int) -> None:
        image = gray_png(10 + 40 * n)
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(f"{self.url}/predict", files={"file": ("c.png", image, "image/png")})
                except httpx.HTTPError as exc:
                    outcome, ids = type(exc).__name__, []
                else:
                    outcome = str(response.status_code)
                    ids = [p["id"] for p in response.json()["predictions"]] if response.status_code == 200 else []
                with self._lock:
                    self.outcomes[outcome] += 1
                    self.ids.extend(ids)


@dataclass(frozen=True)
class Outage:
    outage_s: float
    clients: int
    killed: str  # no, drained (SIGKILL once the queue was empty), or loaded (SIGKILL under load)
    requests: int
    answered: int  # 200s
    failed: int  # anything else
    logged: int  # answered ids found in the log afterwards
    lost: int
    spooled_peak: int
    dropped: int  # rows the service counted as dropped
    catch_up_s: float  # from the database's start (and the restarted service's) to an empty spool, under load


def fresh_database(postgres: Postgres, name: str) -> str:
    """A new empty database on the server; its URL."""
    engine = create_engine(postgres.url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return postgres.url.rsplit("/", 1)[0] + "/" + name


def _wait(condition: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout_s:g} s")
        time.sleep(0.1)


def outage(
    postgres: Postgres, database: str, model: Path, work: Path, *, outage_s: float, clients: int = 4,
    kill: bool = False, before_s: float = 1.0, after_s: float = 1.0, catch_up_timeout_s: float = 120.0,
    env: Mapping[str, str] | None = None, drain: bool = True,
) -> Outage:
    """The scenario, on a fresh database named `database`; the database is running again when it returns.
    With `kill`, the clients stop and, when `drain`, the writer's queue empties before the SIGKILL; without
    `drain` the SIGKILL comes while the clients still post (rows answered in the last milliseconds are still in
    memory then: that is what it measures, and requests in flight fail)."""
    url = fresh_database(postgres, database)
    spec = service_spec(f"outage-{database}", model,
                        {"PREDICTION_LOG_URL": url, "DATA_DIR": str(work / database), "LOG_LEVEL": "warning",
                         **(env or {})})
    peak = 0

    def spooled(server: Server) -> float:
        nonlocal peak
        value = metric_sum(metrics(server.url), "prediction_log_spool_rows")
        peak = max(peak, int(value))
        return value

    def queued(server: Server) -> float:
        return metric_sum(metrics(server.url), "prediction_log_queue_rows")

    server = Server(spec, work)
    server.start()
    dropped = 0.0
    try:
        load = PredictLoad(server.url, clients)
        with load:
            time.sleep(before_s)
            postgres.stop("immediate")
            end = time.monotonic() + outage_s
            while time.monotonic() < end:
                spooled(server)
                time.sleep(min(0.5, max(end - time.monotonic(), 0)))
            if kill and not drain:
                server.kill()
        if kill:
            if drain:  # every answered row has left the queue for the spool's disk: then SIGKILL, no shutdown
                _wait(lambda: queued(server) == 0, 30, "the writer did not empty its queue")
                spooled(server)
                dropped += metric_sum(metrics(server.url), "prediction_log_dropped_total")
                server.kill()
            postgres.start()
            started = time.monotonic()
            server = Server(spec, work)
            server.start()
        else:
            postgres.start()
            started = time.monotonic()
        second = PredictLoad(server.url, clients)
        emptied = None
        with second:  # the spool is written while new answers keep coming
            end = time.monotonic() + after_s
            while time.monotonic() < end:
                if emptied is None and spooled(server) == 0:
                    emptied = time.monotonic()
                time.sleep(0.2)
        _wait(lambda: spooled(server) == 0, catch_up_timeout_s, "the spool was not written")
        catch_up_s = (emptied or time.monotonic()) - started
        dropped += metric_sum(metrics(server.url), "prediction_log_dropped_total")
        server.terminate()
    finally:
        server.stop()
        if not postgres.running:
            postgres.start()
    from service.core.quality.store import predictions  # the service's own table, as the service wrote it

    engine = create_engine(url)
    with engine.connect() as connection:
        logged = set(connection.scalars(select(predictions.c.id)))
    engine.dispose()
    answered = set(load.ids) | set(second.ids)
    outcomes = load.outcomes + second.outcomes
    return Outage(
        outage_s=outage_s, clients=clients, killed=("drained" if drain else "loaded") if kill else "no",
        requests=sum(outcomes.values()),
        answered=len(answered), failed=sum(n for k, n in outcomes.items() if k != "200"),
        logged=len(answered & logged), lost=len(answered - logged), spooled_peak=peak, dropped=int(dropped),
        catch_up_s=catch_up_s,
    )
