"""Accuracy, precision and recall of one version over its judged answers, with the confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Scores:
    """Over `verdicts` judged answers; precision and recall are for the positive class (the card's second
    class), None where their denominator is 0."""

    verdicts: int
    correct: int
    accuracy: float | None
    precision: float | None
    recall: float | None
    # confusion[true label][predicted label]
    confusion: dict[str, dict[str, int]]

    @classmethod
    def of(cls, judged: Sequence[tuple[str, str]], class_names: Sequence[str]) -> Scores:
        """`judged`: (predicted, true) label pairs."""
        names = list(class_names)
        for predicted, truth in judged:  # labels of another card (a version with other class names)
            for name in (predicted, truth):
                if name not in names:
                    names.append(name)
        confusion = {truth: dict.fromkeys(names, 0) for truth in names}
        for predicted, truth in judged:
            confusion[truth][predicted] += 1
        positive = class_names[1]
        true_positive = confusion[positive][positive]
        predicted_positive = sum(row[positive] for row in confusion.values())
        actual_positive = sum(confusion[positive].values())
        correct = sum(confusion[name][name] for name in names)
        return cls(
            verdicts=len(judged),
            correct=correct,
            accuracy=correct / len(judged) if judged else None,
            precision=true_positive / predicted_positive if predicted_positive else None,
            recall=true_positive / actual_positive if actual_positive else None,
            confusion=confusion,
        )
