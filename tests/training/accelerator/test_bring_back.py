"""Bringing the search's weights back: the TensorFlow-backed export of the winner and of its fold ensemble,
parity-checked, scored once on the held-out images, with the rule's verdict and the side-by-side table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

FILTERS = (4, 4, 4)


@pytest.fixture(scope="module")
def search_results(prepared_toy: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the search leaves in $OUT, run here (TensorFlow backend) for one epoch per fold."""
    from training.accelerator.search import main

    out = tmp_path_factory.mktemp("search-out")
    code = main(["--data", str(prepared_toy), "--out", str(out), "--work", str(out.parent / "work"),
                 "--recipes", "flips", "--epochs", "1", "--filters", "4,4,4",
                 "--no-mixed-precision", "--budget-s", "300"])  # fmt: skip
    assert code == 0
    return out


def base_metadata(toy_non_test) -> dict:
    from training.pipeline import Loaded, base_metadata
    from training.settings import DataSettings, OutputSettings, SelectionSettings, TrainSettings

    settings = TrainSettings(data=DataSettings(dataset="folder", data_dir=Path("toy"), test_split=0.25),
                             selection=SelectionSettings(cv=2), output=OutputSettings(name="toy"))  # fmt: skip
    return base_metadata(settings, Loaded(toy_non_test.train, toy_non_test), 0.5, "pooled out-of-fold accuracy")


def test_bring_back_exports_the_winner_and_its_fold_ensemble_and_scores_them_once(
    search_results: Path, toy_non_test, tmp_path: Path
) -> None:
    from service.core.model_card import read_model_card
    from training.accelerator.bring_back import export_candidates, load_model, read_results
    from training.export import onnx_predict, sha256_of
    from training.pipeline import PreviousAnswers

    test = toy_non_test.test
    results = read_results(search_results)
    shipped = PreviousAnswers(Path("shipped.onnx"), 0.5, np.full(len(test), 0.9, np.float32))  # says "dark" always

    decision = export_candidates(search_results, results, test, tmp_path, base_metadata(toy_non_test), shipped,
                                 speed_seconds=0.2)  # fmt: skip

    winner = next(r for r in results["recipes"] if r["name"] == results["winner"])
    card = read_model_card(tmp_path / "model.json")
    assert card.threshold == winner["pooled"]["threshold"]
    raw = json.loads((tmp_path / "model.json").read_text())
    assert raw["ensemble_variant"]["sha256"] == sha256_of(tmp_path / "model.ensemble.onnx")
    assert raw["ensemble_variant"]["images_per_s"] > 0
    assert raw["ensemble_variant"]["single_images_per_s"] > 0
    assert raw["selection"]["winner"] == results["winner"]
    assert read_model_card(tmp_path / "model.ensemble.json").sha256 == sha256_of(tmp_path / "model.ensemble.onnx")
    # The ensemble file answers the mean of the fold models' answers; the single file the final model's.
    members = [load_model(search_results / f"fold-{k}.weights.h5", FILTERS, name=f"m{k}") for k in (1, 2)]
    expected = np.mean([m.predict(test.x, verbose=0) for m in members], axis=0)
    np.testing.assert_allclose(onnx_predict(tmp_path / "model.ensemble.onnx", test.x), expected, atol=1e-4)
    final = load_model(search_results / "final.weights.h5", FILTERS)
    np.testing.assert_allclose(onnx_predict(tmp_path / "model.onnx", test.x), final.predict(test.x, verbose=0),
                               atol=1e-4)  # fmt: skip
    mcnemar = decision["candidates"]["single"]["comparison_with_previous"]["mcnemar_exact"]
    assert mcnemar["images"] == len(test)
    assert decision["ship"] in (True, False)
    assert "passes_out_of_fold_bar" in decision
    table = (tmp_path / "recipes.md").read_text().splitlines()
    assert len(table) == 2 + len(results["recipes"])
    assert sum(f"**{results['winner']}**" in line for line in table) == 1


def test_bring_back_refuses_results_made_from_another_file(
    search_results: Path, prepared_toy: Path, toy_non_test, tmp_path: Path
) -> None:
    from training.accelerator.bring_back import BringBackError, check_same_images, read_results

    results = read_results(search_results)
    check_same_images(results, prepared_toy, toy_non_test.train)  # the file it ran on: accepted
    other = {**results, "data": {**results["data"], "sha256": "0" * 64}}
    with pytest.raises(BringBackError, match="is not the file the search trained on"):
        check_same_images(other, prepared_toy, toy_non_test.train)
    with pytest.raises(BringBackError, match="holds other images than the split rebuilt here"):
        check_same_images(results, prepared_toy, toy_non_test.test)


@pytest.mark.parametrize(("only_winner", "only_shipped", "p_value", "pooled", "ship"), [
    (30, 10, 0.002, {"accuracy": 0.80, "log_loss": 0.45}, True),   # better on the held-out images
    (10, 30, 0.002, {"accuracy": 0.80, "log_loss": 0.45}, False),  # significantly worse
    (12, 10, 0.83, {"accuracy": 0.80, "log_loss": 0.45}, False),   # no evidence either way
    (12, 10, 0.83, {"accuracy": 0.85, "log_loss": 0.39}, True),    # the out-of-fold bar
])  # fmt: skip
def test_the_rule_ships_on_mcnemar_in_the_winners_favour_or_on_the_out_of_fold_bar(
    only_winner: int, only_shipped: int, p_value: float, pooled: dict, ship: bool
) -> None:
    from training.accelerator.bring_back import decide

    comparison = {"mcnemar_exact": {"only_first_correct": only_winner, "only_second_correct": only_shipped,
                                    "p_value": p_value}}  # fmt: skip

    assert decide(pooled, comparison)["ship"] is ship


def test_results_without_a_winner_are_refused(tmp_path: Path) -> None:
    from training.accelerator.bring_back import BringBackError, read_results

    with pytest.raises(BringBackError, match=r"names the folder the search wrote \(\$OUT\)"):
        read_results(tmp_path)
    (tmp_path / "search.json").write_text(json.dumps({"winner": None, "recipes": []}))
    with pytest.raises(BringBackError, match="no recipe finished its folds"):
        read_results(tmp_path)
