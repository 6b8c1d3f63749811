"""service.core.request_path: REQUEST_PATH as set, else batched only when batches measure the gain."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from service.core import request_path
from service.core.config import Settings
from service.core.metrics import Metrics
from service.core.model import Classifier
from service.core.served import ServedModel
from service.core.versions import ModelSource


def costing(per_call_s: float, per_image_s: float):
    def run(batch: np.ndarray) -> np.ndarray:
        time.sleep(per_call_s + per_image_s * len(batch))
        return np.zeros(len(batch), np.float32)

    return run


def settings(**values: object) -> Settings:
    return Settings(**{"model_path": Path("unused.onnx"), **values})


@pytest.mark.parametrize("path", ["direct", "batched"])
def test_a_set_request_path_is_taken_without_measuring(path: str) -> None:
    never = costing(10.0, 0)  # would take 10 s a call if measured
    choice = request_path.choose(settings(request_path=path), never, never, 2)
    assert (choice.path, choice.batch1_images_per_s) == (path, None)


def test_a_batch_size_of_one_is_direct() -> None:
    never = costing(10.0, 0)
    assert request_path.choose(settings(max_batch_size=1), never, never, 2).path == "direct"


def test_auto_batches_when_a_batch_runs_its_images_much_faster() -> None:
    # Per-call overhead dominates: batch 8 costs about what batch 1 does.
    choice = request_path.choose(settings(), costing(0.004, 0.0001), costing(0.004, 0.0001), 1)
    assert choice.path == "batched"
    assert choice.batched_images_per_s > 2 * choice.batch1_images_per_s  # type: ignore[operator]


def test_auto_runs_direct_when_batches_gain_less_than_the_minimum() -> None:
    # Per-image cost dominates: a batch of 8 costs 8 single images.
    choice = request_path.choose(settings(batching_min_gain=1.25), costing(0, 0.002), costing(0, 0.002), 1)
    assert choice.path == "direct"
    assert "below BATCHING_MIN_GAIN=1.25" in choice.reason


@pytest.mark.parametrize(("path", "released"), [("direct", 1), ("batched", 0)])
def test_only_the_direct_path_frees_what_the_batch_warm_up_grew(
    tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch, path: str, released: int
) -> None:
    """The direct path never runs a batch again: OpenVINO would keep its buffers (34 MiB at ready)."""
    calls: list[int] = []
    monkeypatch.setattr(Classifier, "release_memory", lambda self: calls.append(1))
    chosen = settings(request_path=path, model_path=tiny_model_path)
    served = ServedModel.load(ModelSource(tiny_model_path, None), chosen, Metrics())
    assert (served.request_path.path, len(calls)) == (path, released)  # type: ignore[union-attr]
