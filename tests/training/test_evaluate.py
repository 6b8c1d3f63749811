"""Held-out metrics, the plots, and reading the training history back."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.evaluate import binary_metrics, plot_confusion, plot_history, plot_roc

# What keras.callbacks.CSVLogger writes with and without validation data.
HISTORY_WITH_VALIDATION = """epoch,accuracy,auc,learning_rate,loss,val_accuracy,val_auc,val_loss
0,0.6,0.7,0.001,0.69,0.55,0.6,0.70
1,0.8,0.9,0.001,0.40,0.75,0.8,0.50
2,0.9,0.95,0.001,0.30,0.80,0.85,0.55
"""
HISTORY_WITHOUT_VALIDATION = """epoch,accuracy,auc,learning_rate,loss,val_accuracy,val_auc,val_loss
0,0.6,0.7,0.001,0.69,NA,NA,NA
1,0.8,0.9,0.001,0.40,NA,NA,NA
"""


def test_binary_metrics_treats_the_second_class_as_positive() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    probability = np.array([0.1, 0.6, 0.2, 0.9, 0.4, 0.8])

    got = binary_metrics(y, probability, threshold=0.5)

    assert got["confusion_matrix"] == {"tn": 2, "fp": 1, "fn": 1, "tp": 2}
    assert got["accuracy"] == pytest.approx(4 / 6)
    assert got["precision"] == got["recall"] == got["f1"] == pytest.approx(2 / 3)
    assert got["roc_auc"] == pytest.approx(8 / 9)
    assert (got["images"], got["threshold"]) == (6, 0.5)


def test_binary_metrics_has_no_roc_auc_for_a_single_class() -> None:
    got = binary_metrics(np.zeros(3, dtype=int), np.array([0.1, 0.2, 0.7]), threshold=0.5)

    assert got["roc_auc"] is None
    assert got["confusion_matrix"] == {"tn": 2, "fp": 1, "fn": 0, "tp": 0}


@pytest.mark.parametrize(
    "history", [HISTORY_WITH_VALIDATION, HISTORY_WITHOUT_VALIDATION], ids=["with-validation", "without-validation"]
)
def test_plots_are_written_as_png(history: str, tmp_path: Path) -> None:
    (tmp_path / "history.csv").write_text(history)
    y = np.array([0, 0, 1, 1])
    probability = np.array([0.2, 0.6, 0.7, 0.9])

    plot_history(tmp_path / "history.csv", tmp_path / "curves.png")
    plot_roc(y, probability, tmp_path / "roc.png")
    plot_confusion(binary_metrics(y, probability, 0.5)["confusion_matrix"], ("ok", "bad"), tmp_path / "cm.png")

    for name in ("curves.png", "roc.png", "cm.png"):
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG"
            assert min(image.size) > 100


@pytest.mark.parametrize(
    ("history", "monitor", "expected"),
    [
        pytest.param(HISTORY_WITH_VALIDATION, "val_loss", (0.50, 1), id="val-loss"),
        pytest.param(HISTORY_WITHOUT_VALIDATION, "loss", (0.40, 0), id="loss"),
        pytest.param(HISTORY_WITHOUT_VALIDATION, "val_loss", (math.inf, 0), id="val-loss-never-measured"),
        pytest.param(None, "val_loss", (math.inf, 0), id="no-history"),
    ],
)
def test_resume_reads_the_best_value_so_far_from_the_history(
    history: str | None, monitor: str, expected: tuple[float, int], tmp_path: Path
) -> None:
    from training.fit import _history_best

    path = tmp_path / "history.csv"
    if history is not None:
        path.write_text(history)

    assert _history_best(path, monitor) == pytest.approx(expected)


def test_log_loss_stays_finite_for_a_confident_miss() -> None:
    from training.evaluate import log_loss

    assert log_loss(np.array([1, 0]), np.array([0.0, 0.0])) == pytest.approx(-np.log(1e-7) / 2, rel=1e-6)
    assert log_loss(np.array([1, 0]), np.array([0.5, 0.5])) == pytest.approx(np.log(2))
