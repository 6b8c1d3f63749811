"""Held-out metrics and the plots written next to the model."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen on a training box
import matplotlib.pyplot as plt
import numpy as np
from sklearn import metrics


def binary_metrics(y_true: np.ndarray, probability: np.ndarray, threshold: float) -> dict:
    """Accuracy, ROC AUC, precision/recall of the positive class and the confusion matrix."""
    predicted = (probability >= threshold).astype(int)
    tn, fp, fn, tp = metrics.confusion_matrix(y_true, predicted, labels=[0, 1]).ravel()
    has_both = len(np.unique(y_true)) == 2
    return {
        "images": len(y_true),
        "threshold": threshold,
        "accuracy": float(metrics.accuracy_score(y_true, predicted)),
        "roc_auc": float(metrics.roc_auc_score(y_true, probability)) if has_both else None,
        "precision": float(metrics.precision_score(y_true, predicted, zero_division=0)),
        "recall": float(metrics.recall_score(y_true, predicted, zero_division=0)),
        "f1": float(metrics.f1_score(y_true, predicted, zero_division=0)),
        "confusion_matrix": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
    }


# Probabilities are clipped before the log loss so one confident miss cannot make it infinite.
LOG_LOSS_EPSILON = 1e-7


def log_loss(y_true: np.ndarray, probability: np.ndarray) -> float:
    """Binary cross-entropy against the 0/1 labels, the figure every split and fold is compared on."""
    clipped = np.clip(probability, LOG_LOSS_EPSILON, 1 - LOG_LOSS_EPSILON)
    return float(metrics.log_loss(y_true, clipped, labels=[0, 1]))


def best_threshold(y_true: np.ndarray, probability: np.ndarray) -> float:
    """The threshold with the highest accuracy (ties: the one nearest 0.5); call it on validation data only."""
    candidates = np.round(np.linspace(0.05, 0.95, 181), 3)
    accuracy = np.array([np.mean((probability >= t) == y_true) for t in candidates])
    best = np.flatnonzero(accuracy == accuracy.max())
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])


def plot_history(history_csv: Path, out: Path) -> None:
    with history_csv.open() as f:
        rows = list(csv.DictReader(f))
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
        ax.plot(epochs, [float(r[key]) for r in rows], label=f"training {key}")
        # CSVLogger writes "NA" in the val_ columns when there was no validation data.
        if rows and rows[0].get(f"val_{key}", "NA") != "NA":
            ax.plot(epochs, [float(r[f"val_{key}"]) for r in rows], label=f"validation {key}")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_roc(y_true: np.ndarray, probability: np.ndarray, out: Path) -> None:
    fpr, tpr, _ = metrics.roc_curve(y_true, probability)
    auc = metrics.auc(fpr, tpr)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, tpr, label=f"ROC AUC = {auc:.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("Held-out test set")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_confusion(confusion: dict, class_names: tuple[str, str], out: Path) -> None:
    matrix = np.array([[confusion["tn"], confusion["fp"]], [confusion["fn"], confusion["tp"]]])
    fig, ax = plt.subplots(figsize=(5, 4))
    metrics.ConfusionMatrixDisplay(matrix, display_labels=list(class_names)).plot(
        ax=ax, colorbar=False
    )
    ax.set_title("Held-out test set")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
