"""A real PostgreSQL (initdb + pg_ctl in a temporary folder) shared by two real service processes."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from bench.servers import Server, service_spec
from service.core.quality.records import Answerer, ImageFacts, PredictionRecord
from service.core.quality.store import Decision, Store, predictions
from tests.service.helpers import gray_png
from tests.service.quality.test_gatekeeper import write_pairs

pytestmark = pytest.mark.postgres


def postgres_bin() -> Path | None:
    """Debian's server binaries (make test installs postgresql when root), else initdb on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = found[-1] if found else shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    binaries = postgres_bin()
    if binaries is None:
        pytest.skip("no PostgreSQL server binaries (apt-get install postgresql; make test does it when root)")
    # PostgreSQL refuses to run as root: as root, the server runs as the package's postgres user.
    user = None
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run the server as")
    folder = Path(tempfile.mkdtemp(prefix="quality-pg-"))
    if user is not None:
        os.chown(folder, user.pw_uid, user.pw_gid)
    data, port = folder / "data", free_port()
    run_as = {"user": user.pw_uid, "group": user.pw_gid} if user is not None else {}

    def pg(*args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, timeout=60, cwd=folder, **run_as)  # type: ignore[call-overload]

    try:
        pg(str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "quality", "--no-sync", "-E", "UTF8")
        pg(str(binaries / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w", "-o",
           f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        yield f"postgresql+psycopg://quality@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            pg(str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


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


def test_the_gates_queries_and_the_audit_run_on_postgres(postgres_url: str) -> None:
    store = Store(postgres_url)
    write_pairs(store, "7", "8", wins=3, at=1000.0)
    write_pairs(store, "7", "8", wins=2, at=3000.0)
    assert store.judged_pairs("7", "8", since=0.0) == [("defective", "functional", "defective", 5)]
    assert store.judged_pairs("7", "8", since=2000.0) == [("defective", "functional", "defective", 2)]
    store.record_decision(Decision(2000.0, "promote", "7", "8", "gate", '{"evidence": 21.0}'))
    assert store.decisions(limit=1) == [Decision(2000.0, "promote", "7", "8", "gate", '{"evidence": 21.0}')]
    record = PredictionRecord.of("pg-unjudged", "served", Answerer("7", "onnxruntime", "fp32",
                                 ("functional", "defective")), 0.1, "functional", 0.5, ImageFacts.of(b"x", keep=True))
    store.write([PredictionRecord(**{**record.__dict__, "time": 500.0})])
    assert store.forget_unjudged_images(cutoff=600.0) == 1
    store.close()
