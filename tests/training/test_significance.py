"""Held-out figures with their uncertainty: Wilson intervals and McNemar's exact test."""

from __future__ import annotations

import numpy as np
import pytest

from training.significance import accuracy_interval, mcnemar_exact


def test_accuracy_interval_brackets_the_shipped_models_figure() -> None:
    low, high = accuracy_interval(547, 656)

    assert low < 547 / 656 < high
    assert (round(low, 3), round(high, 3)) == (0.803, 0.860)


def test_accuracy_interval_stays_inside_zero_and_one() -> None:
    assert accuracy_interval(10, 10)[1] == pytest.approx(1.0)
    assert accuracy_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-12)


def test_mcnemar_counts_only_the_images_the_models_disagree_on() -> None:
    first = np.array([True] * 50 + [True] * 9 + [False] * 1 + [False] * 40)
    second = np.array([True] * 50 + [False] * 9 + [True] * 1 + [False] * 40)

    result = mcnemar_exact(first, second)

    assert (result["images"], result["only_first_correct"], result["only_second_correct"]) == (100, 9, 1)
    assert result["p_value"] == pytest.approx(22 / 1024)  # two-sided exact binomial, 10 trials, 1 or 9


def test_mcnemar_of_identical_answers_finds_no_difference() -> None:
    same = np.array([True, False, True])

    assert mcnemar_exact(same, same)["p_value"] == 1.0


def test_mcnemar_refuses_answers_on_different_images() -> None:
    with pytest.raises(ValueError, match="scored on different images"):
        mcnemar_exact(np.ones(3, bool), np.ones(4, bool))
