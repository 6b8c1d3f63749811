"""The one label rule: a probability of the positive class at or above the threshold is the positive label.

Every door labels through here (/predict's encoder, /v2's outputs, /explain, the predict CLI), so a
threshold means the same everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence


def is_positive(probability: float, threshold: float) -> bool:
    return probability >= threshold


def label_for(probability: float, threshold: float, class_names: Sequence[str]) -> str:
    """class_names is (negative, positive), as the model card records them."""
    return class_names[int(is_positive(probability, threshold))]


def scores_for(probability: float, class_names: Sequence[str]) -> dict[str, float]:
    """Each class's probability: 1 - p for the negative class, p for the positive one."""
    negative, positive = class_names
    return {negative: 1.0 - probability, positive: probability}
