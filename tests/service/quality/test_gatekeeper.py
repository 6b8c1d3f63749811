"""The gatekeeper: the gate over the log's judged pairs, shown by /quality, acted on in auto mode, audited."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.core.config import Settings
from service.core.metrics import Metrics
from service.core.quality.evidence import record_decision
from service.core.quality.gate import Gate, PairCounts
from service.core.quality.gatekeeper import GateKeeper, Roles
from service.core.quality.records import Answerer, ImageFacts, PredictionRecord
from service.core.quality.store import Store, sqlite_url
from service.core.quality.tables import Decision
from tests.service.helpers import gray_png, metric, wait_until
from tests.service.quality.test_shadow import add_flipped_version

KEY = "admin-key"
HEADERS = {"X-API-Key": KEY}
# The tiny model answers p = sigmoid(8 (mean - 0.5)): below 128 functional, above defective (the positive class);
# version 2 answers the other label for each.
LEVELS = (10, 200, 40, 230)
CLASSES = ("functional", "defective")


@pytest.fixture
def loop_client(
    make_client: Callable[..., TestClient], model_dir: Path, tmp_path: Path
) -> Callable[..., TestClient]:
    def make(**settings: object) -> TestClient:
        return make_client(MODEL_DIR=model_dir, API_KEY=KEY, DATA_DIR=tmp_path / "data", ROLLOUT="shadow",
                           **settings)
    return make


def other(label: str) -> str:
    return CLASSES[1 - CLASSES.index(label)]


def answered(client: TestClient, level: int, *, scored: bool) -> tuple[str, str]:
    """One image answered (and, `scored`, scored in shadow too, both rows written): its id and served label."""
    scored_before = metric(client, "shadow_images_total", outcome="scored")
    rows_before = metric(client, "prediction_log_rows_total")
    response = client.post("/predict", files=[("files", (f"{level}.png", gray_png(level), "image/png"))],
                           headers=HEADERS)
    assert response.status_code == 200, response.text
    prediction = response.json()["predictions"][0]
    if scored:
        wait_until(lambda: metric(client, "shadow_images_total", outcome="scored") == scored_before + 1)
    wait_until(lambda: metric(client, "prediction_log_rows_total") == rows_before + (2 if scored else 1))
    return prediction["id"], prediction["label"]


def judge(client: TestClient, verdicts: list[dict[str, str]]) -> None:
    response = client.post("/feedback", json=verdicts, headers=HEADERS)
    assert response.status_code == 200, response.text


def recount(data_dir: Path, served: str, shadow: str) -> PairCounts:
    """The gate's input computed again from the log's rows, with plain SQL and Python."""
    with sqlite3.connect(data_dir / "predictions.sqlite3") as db:
        rows = db.execute(
            "select f.label, s.label, h.label from predictions s join predictions h on h.id = s.id "
            "join feedback f on f.id = s.id where s.role = 'served' and h.role = 'shadow' and s.version = ? "
            "and h.version = ?", (served, shadow),
        ).fetchall()
    return PairCounts.of([(*row, n) for row, n in Counter(rows).items()], "defective")


def test_the_gate_in_quality_equals_a_recount_from_the_log_rows(
    loop_client: Callable[..., TestClient], model_dir: Path, tiny_model_path: Path, tmp_path: Path
) -> None:
    client = loop_client()
    before = [answered(client, level, scored=False) for level in LEVELS]  # judged, but no shadow answered them
    judge(client, [{"id": id, "label": label} for id, label in before])
    add_flipped_version(model_dir, tiny_model_path)
    assert client.post("/admin/reload", headers=HEADERS).json()["shadow"] == "2"
    pairs = [answered(client, LEVELS[n % 4], scored=True) for n in range(9)]
    # Five verdicts side with the shadow version (the served label was wrong), four with the served one.
    judge(client, [{"id": id, "label": other(label) if n < 5 else label} for n, (id, label) in enumerate(pairs)])

    gate = client.get("/quality", headers=HEADERS).json()["gate"]
    counts = recount(tmp_path / "data", "1", "2")
    assert (counts.pairs, counts.candidate_only, counts.served_only) == (9, 5, 4)
    assert gate["pairs"] == counts.pairs
    assert (gate["shadow_only_correct"], gate["served_only_correct"]) == (counts.candidate_only, counts.served_only)
    assert (gate["positives"], gate["positives_shadow_only"], gate["positives_served_only"]) == (
        counts.positives, counts.recall_gained, counts.recall_lost)
    expected = Gate(alpha=0.05, min_pairs=200).promotion(counts)
    assert gate["evidence"] == pytest.approx(expected.evidence)
    assert gate["recall_evidence"] == pytest.approx(expected.recall_evidence)
    assert gate["one_look_p"] == pytest.approx(expected.one_look_p)
    assert (gate["check"], gate["mode"], gate["decision"]) == ("promote", "manual", "wait")
    assert gate["waiting_for"] == "191 more judged pairs (of 200)"
    assert metric(client, "gate_pairs") == 9


def test_a_worse_candidate_is_not_promoted_however_many_verdicts(
    loop_client: Callable[..., TestClient], model_dir: Path, tiny_model_path: Path
) -> None:
    client = loop_client(PROMOTE="auto", GATE_MIN_PAIRS=4)
    add_flipped_version(model_dir, tiny_model_path)
    client.post("/admin/reload", headers=HEADERS)
    for n in range(16):
        id, label = answered(client, LEVELS[n % 4], scored=True)
        judge(client, [{"id": id, "label": label}])  # the served version right, the shadow wrong
    report = client.get("/quality", headers=HEADERS).json()
    assert report["served_version"] == "1"
    assert report["gate"]["served_only_correct"] == 16
    assert report["gate"]["evidence"] < 1  # no evidence for the shadow version: E falls, never to 20
    assert report["decisions"] == []


def test_a_passing_gate_in_manual_mode_waits_for_a_person(
    loop_client: Callable[..., TestClient], model_dir: Path, tiny_model_path: Path
) -> None:
    client = loop_client(GATE_MIN_PAIRS=4)
    add_flipped_version(model_dir, tiny_model_path)
    client.post("/admin/reload", headers=HEADERS)
    pairs = [answered(client, LEVELS[n % 4], scored=True) for n in range(13)]
    judge(client, [{"id": id, "label": other(label)} for id, label in pairs])
    gate = client.get("/quality", headers=HEADERS).json()["gate"]
    assert gate["evidence"] >= 20
    assert gate["decision"] == "manual"
    assert gate["waiting_for"].startswith("POST /admin/promote")
    assert client.get("/quality", headers=HEADERS).json()["served_version"] == "1"


@pytest.mark.parametrize(("setting", "rollout"), [("PROMOTE", "replace"), ("ROLLBACK", "replace")])
def test_auto_modes_need_shadow_rollout(setting: str, rollout: str) -> None:
    with pytest.raises(ValidationError, match=f"{setting}=auto decides on verdicts .* set ROLLOUT=shadow"):
        Settings(**{setting.lower(): "auto", "rollout": rollout})


# --- the keeper over a store written directly ----------------------------------------------------------------


def write_pairs(store: Store, served: str, shadow: str, wins: int, at: float, *, image: bytes | None = None) -> None:
    """`wins` judged images both versions answered at `at`, where only the shadow version was right."""
    records, verdicts = [], []
    for n in range(wins):
        id = f"{served}-{shadow}-{at}-{n}"
        facts = ImageFacts(f"{n:064d}", 10, image)
        for role, version, label in (("served", served, "functional"), ("shadow", shadow, "defective")):
            record = PredictionRecord.of(id, role, Answerer(version, "onnxruntime", "fp32", CLASSES), 0.9, label,
                                         0.5, facts)
            records.append(PredictionRecord(**{**record.__dict__, "time": at}))
        verdicts.append((id, "defective"))
    store.write(records)
    store.give_verdicts(verdicts, at)


def keeper(store: Store, roles: Roles, **settings: object) -> GateKeeper:
    async def no_swap() -> None:
        raise AssertionError("the keeper must not act here")

    quality = Settings(**{"rollout": "shadow", "promote": "auto", "rollback": "auto", "gate_min_pairs": 5,
                          **settings})
    return GateKeeper(quality, store, Metrics(), roles=lambda: roles, swap=no_swap)  # type: ignore[arg-type]


def test_a_rolled_back_version_is_not_promoted_again_by_the_gate(tmp_path: Path) -> None:
    store = Store(sqlite_url(tmp_path))
    write_pairs(store, "1", "2", wins=20, at=1000.0)  # evidence from before the rollback does not count
    record_decision(store, Decision(2000.0, "rollback", "2", "1", "gate", "{}"))
    write_pairs(store, "1", "2", wins=20, at=3000.0)
    state = keeper(store, Roles("1", "2", "defective")).state()
    assert (state.check, state.since, state.verdict.counts.pairs) == ("promote", 2000.0, 20)
    assert state.verdict.decision == "pass"
    assert not state.acts
    assert state.report()["waiting_for"].startswith("version 2 was rolled back")
    asyncio.run(keeper(store, Roles("1", "2", "defective")).tick())  # no_swap would raise


def test_after_a_promotion_the_gate_checks_for_a_rollback_on_the_pairs_since(tmp_path: Path) -> None:
    store = Store(sqlite_url(tmp_path))
    write_pairs(store, "2", "1", wins=3, at=1000.0)
    record_decision(store, Decision(2000.0, "promote", "1", "2", "gate", "{}"))
    write_pairs(store, "2", "1", wins=7, at=3000.0)
    state = keeper(store, Roles("2", "1", "defective")).state()
    assert (state.check, state.mode, state.verdict.counts.pairs) == ("rollback", "auto", 7)
    assert state.verdict.threshold == pytest.approx(40)


def test_unjudged_images_expire_and_judged_ones_stay(tmp_path: Path) -> None:
    store = Store(sqlite_url(tmp_path))
    now = time.time()
    answerer = Answerer("1", "onnxruntime", "fp32", CLASSES)
    old, recent = now - 4 * 24 * 3600, now - 60
    rows = [PredictionRecord(**{**PredictionRecord.of(id, "served", answerer, 0.2, "functional", 0.5,
                                                      ImageFacts.of(id.encode(), keep=True)).__dict__, "time": at})
            for id, at in (("old-judged", old), ("old-unjudged", old), ("recent-unjudged", recent))]
    store.write(rows)
    store.give_verdicts([("old-judged", "functional")], now)
    asyncio.run(keeper(store, Roles("1", None, "defective"), prediction_log_images=True).tick())
    with sqlite3.connect(tmp_path / "predictions.sqlite3") as db:
        kept = dict(db.execute("select id, image is not null from predictions").fetchall())
    assert kept == {"old-judged": 1, "old-unjudged": 0, "recent-unjudged": 1}
