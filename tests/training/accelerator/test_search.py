"""The accelerator's search, run end to end on toy images: on JAX with TensorFlow and the service's pydantic
made unimportable (as on the accelerator), and under a budget too short for one recipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
# What the accelerator's image lacks (docs/accelerator.md): importing any of them there fails, so here too.
ABSENT_THERE = ("tensorflow", "tf2onnx", "pydantic", "pydantic_settings", "elpv_dataset", "fastapi")
AS_ON_THE_ACCELERATOR = f"""
import importlib.abc, runpy, sys

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {ABSENT_THERE!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (absent on the accelerator)", name=name)
        return None

sys.meta_path.insert(0, Absent())
sys.argv = ["search", *sys.argv[1:]]
runpy.run_module("training.accelerator.search", run_name="__main__")
"""
# A budget far above need: this test is about what is written, not about the pace of a shared CPU.
TINY = ["--epochs", "1", "--filters", "4,4,4", "--budget-s", "3600"]


def test_search_runs_on_jax_without_tensorflow_and_keeps_the_leaders_files(prepared_toy: Path, tmp_path: Path) -> None:
    pytest.importorskip("jax")
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    recipes = "strong-aug-smooth-mixup"  # every augmentation, mixup and label smoothing; the rule has its own tests

    run = subprocess.run(
        [sys.executable, "-c", AS_ON_THE_ACCELERATOR, "--data", str(prepared_toy), "--out", str(out),
         "--work", str(work), "--recipes", recipes, *TINY],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads((out / "search.json").read_text())
    assert results["run"]["backend"] == "jax"
    from training.accelerator.arrays import read_arrays

    data = read_arrays(prepared_toy)
    assert results["data"]["sha256"] == data.sha256
    assert [r["name"] for r in results["recipes"]] == recipes.split(",")
    for record in results["recipes"]:
        assert record["complete"], record["status"]
        assert [f["fold"] for f in record["folds"]] == [1, 2]
        probability = np.array(record["out_of_fold_probability"], dtype=float)
        assert probability.shape == (len(data),)
        assert ((probability >= 0) & (probability <= 1)).all()  # every image predicted once, out of fold
        pooled = record["pooled"]
        assert pooled["accuracy"] == pytest.approx(np.mean((probability >= pooled["threshold"]) == data.y), abs=1e-6)
        assert set(record["pooled_flip_averaged"]) >= {"accuracy", "log_loss", "threshold"}
    best = results["recipes"][0]
    assert results["winner"] == best["name"]
    for fold in (1, 2):
        leader = work / best["name"] / f"fold-{fold}.weights.h5"
        assert (out / f"fold-{fold}.weights.h5").read_bytes() == leader.read_bytes()
    assert results["final"]["status"] == "complete"
    assert (out / "final.weights.h5").is_file()
    assert "pooled out-of-fold accuracy" in (out / "search.log").read_text()


def test_a_budget_too_short_for_one_recipe_stops_the_fit_and_chooses_nothing(
    prepared_toy: Path, tmp_path: Path
) -> None:
    from training.accelerator.search import main

    out = tmp_path / "out"

    code = main(["--data", str(prepared_toy), "--out", str(out), "--work", str(tmp_path / "work"), "--epochs", "50",
                 "--filters", "4,4,4", "--recipes", "flips,strong-aug", "--budget-s", "0.5"])  # fmt: skip

    assert code == 3
    results = json.loads((out / "search.json").read_text())
    first, second = results["recipes"]
    assert first["status"] == "cut short by the budget in fold 1"
    assert first["folds"][0]["cut"] is True
    assert second["status"] == "not run"
    assert results["winner"] is None
    assert not list(out.glob("*.weights.h5"))


def test_budget_starts_only_what_its_measured_rate_says_will_fit() -> None:
    from training.accelerator.search import Budget

    now = [0.0]
    budget = Budget(100.0, clock=lambda: now[0])
    assert budget.estimate(1000, 10) == 0.0  # nothing measured yet: the first fit starts
    budget.record(seconds=20.0, images=1000, epochs=10)  # 2 ms per image-epoch
    now[0] = 30.0

    assert budget.estimate(1000, 10) == pytest.approx(20.0)
    assert budget.fits(70.0)
    assert not budget.fits(70.1)
    budget.record(seconds=40.0, images=1000, epochs=10)  # a slower fit (a first fold compiles): the mean rate
    assert budget.estimate(500, 10) == pytest.approx(15.0)


@pytest.mark.parametrize(("argv", "message"), [
    (["--recipes", "nope"], "unknown recipe 'nope'"),
    (["--epochs", "1"], "does not exist: run python -m training.accelerator.prepare"),
])  # fmt: skip
def test_search_refuses_unknown_recipes_and_a_missing_file(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.accelerator.search import main

    code = main(["--data", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "out"), *argv])

    assert code == 2
    assert message in capsys.readouterr().err
