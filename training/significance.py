"""How sure a held-out figure is: a 95 % interval for accuracy and McNemar's test between two models
scored on the same images."""

from __future__ import annotations

import numpy as np
from scipy import stats


def accuracy_interval(correct: int, images: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval: unlike the normal approximation it stays inside [0, 1] near 100 %."""
    if images == 0:
        raise ValueError("no images to score")
    result = stats.binomtest(correct, images).proportion_ci(confidence_level=confidence, method="wilson")
    return float(result.low), float(result.high)


def mcnemar_exact(first_correct: np.ndarray, second_correct: np.ndarray) -> dict:
    """Exact McNemar test: among the images exactly one model gets right, is the split 50/50?

    Returns the two discordant counts and the two-sided p-value (1.0 when the models never disagree).
    """
    first_correct = np.asarray(first_correct, dtype=bool)
    second_correct = np.asarray(second_correct, dtype=bool)
    if first_correct.shape != second_correct.shape:
        raise ValueError(f"the models were scored on different images: {first_correct.shape} vs {second_correct.shape}")
    only_first = int((first_correct & ~second_correct).sum())
    only_second = int((~first_correct & second_correct).sum())
    discordant = only_first + only_second
    p_value = 1.0 if discordant == 0 else float(stats.binomtest(only_first, discordant, 0.5).pvalue)
    return {"images": len(first_correct), "only_first_correct": only_first, "only_second_correct": only_second,
            "p_value": p_value}
