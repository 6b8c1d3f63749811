"""`train --cv K --ray` on a real two-node cluster: the folds run on both nodes and the out-of-fold report is the
one a single process writes (and `training.cv_report` reads it); a fold whose node is lost resumes elsewhere
from its last epoch."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.ray.conftest import NO_RAY, LocalCluster
from tests.training.toy import make_tiny_model, write_toy_folder

pytestmark = [
    pytest.mark.ray, pytest.mark.timeout(240),
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]
ray = pytest.importorskip("ray", reason=NO_RAY)
pytest.importorskip("tensorflow", reason="the train extra is not installed")

FOLDS = 2
EPOCHS = 2
# 24 images a class: 36 after the test split, two folds of 18 (two batches of 9 to fit on).
RECIPE = ["--dataset", "folder", "--cv", str(FOLDS), "--cv-only", str(FOLDS), "--epochs", str(EPOCHS),
          "--filters", "8,8,8", "--batch-size", "9", "--seed", "0", "--no-augment"]  # fmt: skip


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_folder(tmp_path_factory.mktemp("toy"), per_class=24, seed=0)


def _attempts(root: Path, number: int) -> list[dict]:
    from training.cv_ray import attempts_path

    path = attempts_path(root, number)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _flat(value: object, key: str = "") -> dict[str, object]:
    """{"pooled.accuracy": 0.94, ...}: pytest.approx compares flat mappings only."""
    if isinstance(value, dict):
        return {k: v for name, item in value.items() for k, v in _flat(item, f"{key}.{name}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in _flat(item, f"{key}[{i}]").items()}
    return {key: value}


def _comparable(summary: dict) -> dict[str, object]:
    return _flat({key: value for key, value in summary.items() if key != "fold_membership"})


def test_folds_run_on_both_nodes_and_report_what_one_process_reports(
    ray_nodes: LocalCluster, toy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training import cli, cv_report

    here, there, storage = tmp_path / "here", tmp_path / "there", tmp_path / "shared"
    assert cli.main([*RECIPE, "--data-dir", str(toy), "--out", str(here)]) == 0
    assert cli.main([*RECIPE, "--data-dir", str(toy), "--out", str(there),
                     "--ray", ray_nodes.cluster.address, "--storage", str(storage)]) == 0  # fmt: skip

    expected = json.loads((here / "cv-screening.json").read_text())["out_of_fold"]
    got = json.loads((there / "cv-screening.json").read_text())["out_of_fold"]
    assert got["fold_membership"] == str(storage / "cv" / "folds.json")
    assert _comparable(got) == pytest.approx(_comparable(expected), abs=1e-4)
    nodes = {attempt["node"] for number in (1, 2) for attempt in _attempts(storage / "cv", number)}
    assert nodes == {ray_nodes.cluster.head_node.node_id, ray_nodes.worker.node_id}

    capsys.readouterr()
    assert cv_report.main(["--checkpoint-dir", str(storage), "--cv", str(FOLDS), "--seed", "0",
                           "--dataset", "folder", "--data-dir", str(toy)]) == 0  # fmt: skip
    reported = json.loads(capsys.readouterr().out)
    assert reported["pooled"] == got["pooled"]
    assert reported["epochs_reached_per_fold"] == {"1": EPOCHS, "2": EPOCHS}


def test_a_fold_whose_node_is_lost_resumes_from_its_last_epoch_on_the_other(
    ray_nodes: LocalCluster, toy: Path, tmp_path: Path
) -> None:
    """Last in this module: the cluster has one node after it."""
    from training.crossval import fold_paths, summarize
    from training.cv_ray import run_folds_on_ray
    from training.data import load_folder
    from training.fit import FitSettings, read_history
    from training.folds import stratified_folds

    # Enough epochs that the node's removal (about a second) lands mid-fold on an idle machine too: with 3 the
    # fold finished first there (the retried attempt started from epoch 3 of 3) in one run of the suite.
    epochs = 60
    data = load_folder(toy)
    folds = stratified_folds(data, FOLDS, seed=0)
    root = tmp_path / "cv"
    worker = ray_nodes.worker.node_id
    lost: list[int] = []

    def lose_the_worker_after_its_first_epoch() -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            for number in (1, 2):
                on_worker = any(a["node"] == worker for a in _attempts(root, number))
                if on_worker and len(read_history(fold_paths(root, number).checkpoints.history)) >= 1:
                    ray_nodes.cluster.remove_node(ray_nodes.worker, allow_graceful=False)
                    lost.append(number)
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=lose_the_worker_after_its_first_epoch, daemon=True)
    killer.start()
    settings = FitSettings(epochs=epochs, batch_size=9, seed=0, augment=False)
    numbers = run_folds_on_ray(data, folds, settings, root, lambda: make_tiny_model(seed=0))
    killer.join(timeout=5)

    assert numbers == [1, 2]
    assert lost, "the worker node was never seen running a fold"
    first, retried = _attempts(root, lost[0])
    assert first["node"] == worker
    assert retried["node"] == ray_nodes.cluster.head_node.node_id
    assert 1 <= retried["from_epoch"] < epochs
    paths = fold_paths(root, lost[0])
    assert len(read_history(paths.checkpoints.history)) == epochs  # continued, not started again
    assert np.load(paths.predictions).shape == (epochs, len(folds[lost[0] - 1].validation))
    assert summarize(data, folds, root, numbers).summary["covers_every_non_test_image"] is True
