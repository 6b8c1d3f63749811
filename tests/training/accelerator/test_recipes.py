"""The recipes and the rule, fixed before the results: what runs, in which order, and what wins."""

from __future__ import annotations

import pytest

from training.accelerator.recipes import (
    RECIPES,
    SELECTION_RULE,
    chosen_recipes,
    passes_out_of_fold_bar,
    winner,
)


def result(name: str, accuracy: float, log_loss: float, complete: bool = True) -> dict:
    return {"name": name, "complete": complete, "pooled": {"accuracy": accuracy, "log_loss": log_loss}}


def test_the_rule_takes_the_highest_pooled_accuracy_then_the_lower_log_loss_among_complete_recipes() -> None:
    results = [result("a", 0.85, 0.40), result("b", 0.86, 0.42), result("c", 0.86, 0.39),
               result("d", 0.99, 0.10, complete=False)]  # fmt: skip

    assert winner(results)["name"] == "c"
    assert winner([result("d", 0.99, 0.1, complete=False)]) is None


@pytest.mark.parametrize(("accuracy", "log_loss", "passes"), [
    (0.845, 0.400, True), (0.844, 0.300, False), (0.900, 0.401, False),
])  # fmt: skip
def test_the_out_of_fold_bar_is_the_cards(accuracy: float, log_loss: float, passes: bool) -> None:
    assert passes_out_of_fold_bar({"accuracy": accuracy, "log_loss": log_loss}) is passes


def test_every_recipe_runs_a_full_schedule_and_the_strong_ones_augment_more() -> None:
    assert len({r.name for r in RECIPES}) == len(RECIPES)
    assert all(r.epochs >= 60 and r.batch_size == 32 and r.ema_momentum for r in RECIPES)
    strong = [r for r in RECIPES if r.name.startswith("strong-aug")]
    assert strong
    assert all(r.quarter_turns and r.degrees and r.shift and r.zoom and r.jitter for r in strong)
    assert any(r.label_smoothing and r.mixup_alpha for r in RECIPES)
    assert "pooled out-of-fold accuracy" in SELECTION_RULE
    assert "test split never goes" in SELECTION_RULE


def test_chosen_recipes_keep_the_listed_order_and_epochs_override_keeps_warmup_shorter() -> None:
    chosen = chosen_recipes("flips,strong-aug", epochs=1)

    assert [r.name for r in chosen] == ["flips", "strong-aug"]
    assert all(r.epochs == 1 and r.warmup_epochs == 0 for r in chosen)
    assert [r.name for r in chosen_recipes(None)] == [r.name for r in RECIPES]
    with pytest.raises(ValueError, match="unknown recipe 'x'; the recipes are strong-aug"):
        chosen_recipes("x")
