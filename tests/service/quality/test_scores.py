"""Accuracy, precision, recall and the confusion matrix over judged answers."""

from __future__ import annotations

import pytest

from service.core.quality.scores import Scores

NAMES = ("functional", "defective")


def test_scores_count_the_confusion_matrix_by_true_then_predicted_label() -> None:
    judged = [("defective", "defective")] * 3 + [("defective", "functional")] + [("functional", "defective")] * 2 + [
        ("functional", "functional")
    ] * 4
    scores = Scores.of(judged, NAMES)
    assert scores.confusion == {"functional": {"functional": 4, "defective": 1},
                                "defective": {"functional": 2, "defective": 3}}
    assert scores.verdicts == 10
    assert scores.accuracy == pytest.approx(0.7)
    assert scores.precision == pytest.approx(3 / 4)
    assert scores.recall == pytest.approx(3 / 5)


def test_scores_without_verdicts_or_positives_are_none_not_zero() -> None:
    assert Scores.of([], NAMES).accuracy is None
    scores = Scores.of([("functional", "functional")], NAMES)
    assert (scores.accuracy, scores.precision, scores.recall) == (1.0, None, None)
