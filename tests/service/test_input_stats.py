"""Input statistics and drift: the PSI, the training profile in the card and the metrics of served inputs."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.core.input_stats import (
    EDGES,
    DriftMonitor,
    bin_index,
    image_statistics,
    population_stability_index,
    profile_of,
    summarize,
)
from tests.model_factory import build_tiny_onnx, write_tiny_metadata
from tests.service.helpers import gray_png, metric


def _noisy(level: float, count: int, seed: int = 0, noise: float = 20.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(level + rng.normal(0, noise, (count, 100, 100, 1)), 0, 255).astype(np.float32)


def test_bins_cover_the_whole_gray_range() -> None:
    assert bin_index("mean_gray", np.array([0.0, 15.99, 16.0, 255.0, 256.0])).tolist() == [0, 0, 1, 15, 15]
    assert bin_index("contrast", np.array([0.0, 127.5, 300.0])).tolist() == [0, 15, 15]


@pytest.mark.parametrize("level", [0.0, 15.99, 16.0, 127.5, 255.0])
def test_one_image_is_summarised_as_the_batch_statistics_bin_it(level: float) -> None:
    image = np.clip(_noisy(level, 1, noise=5.0)[0], 0, 255) if 0 < level < 255 else np.full((100, 100, 1), level)
    summary = summarize(image)
    batch = image_statistics(image[np.newaxis])
    assert summary.mean_gray == pytest.approx(float(batch["mean_gray"][0]))
    assert summary.contrast == pytest.approx(float(batch["contrast"][0]), abs=1e-6)
    assert summary.mean_gray_bin == int(bin_index("mean_gray", batch["mean_gray"])[0])
    assert summary.contrast_bin == int(bin_index("contrast", batch["contrast"])[0])


def test_a_profile_holds_fractions_that_sum_to_one() -> None:
    profile = profile_of([_noisy(100, 10), _noisy(180, 30, seed=1)])
    assert profile.images == 40
    for distribution in (profile.mean_gray, profile.contrast):
        assert math.isclose(sum(distribution.fractions), 1.0)
    assert profile.mean_gray.edges == list(EDGES["mean_gray"])


def test_the_stability_index_is_zero_for_the_same_population_and_large_for_another() -> None:
    assert population_stability_index([0.5, 0.5, 0.0], [0.5, 0.5, 0.0]) == pytest.approx(0.0)
    assert population_stability_index([0.9, 0.1], [0.1, 0.9]) > 1.0


def test_the_monitor_compares_only_the_recent_window_with_the_profile() -> None:
    profile = profile_of([_noisy(120, 200)])
    monitor = DriftMonitor(profile, window=50, near_margin=0.1)
    assert math.isnan(monitor.psi("mean_gray"))
    monitor.observe(_noisy(30, 50, seed=2), [0.5] * 50, threshold=0.5)
    assert monitor.psi("mean_gray") > 0.25
    monitor.observe(_noisy(120, 50, seed=3), [0.9] * 50, threshold=0.5)  # pushes the dark ones out
    assert monitor.psi("mean_gray") < 0.1
    assert monitor.near_threshold_share() == 0.0
    assert monitor.images == 50


@pytest.fixture
def profiled_model(tmp_path: Path) -> Path:
    """The tiny model with a training profile of mid-gray noisy images in its card."""
    path = build_tiny_onnx(tmp_path / "model.onnx")
    profile = profile_of([_noisy(128, 200, noise=0.0)])
    write_tiny_metadata(path, input_statistics=json.loads(profile.model_dump_json()))
    return path


def _post(client: TestClient, level: int) -> float:
    response = client.post("/predict", files={"file": ("a.png", gray_png(level), "image/png")})
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0]["probability"]


def test_drift_metrics_move_when_served_inputs_shift(
    make_client: Callable[..., TestClient], profiled_model: Path
) -> None:
    client = make_client(MODEL_PATH=profiled_model, DRIFT_WINDOW_IMAGES=20)
    for _ in range(20):
        _post(client, 128)  # as in training, and at the tiny model's 0.5: near the threshold
    assert metric(client, "input_drift_psi", statistic="mean_gray") == pytest.approx(0.0, abs=1e-6)
    assert metric(client, "predictions_near_threshold_ratio") == 1.0
    for _ in range(20):
        _post(client, 15)  # much darker than anything in training, far from the threshold
    assert metric(client, "input_drift_psi", statistic="mean_gray") > 0.25
    assert metric(client, "predictions_near_threshold_ratio") == 0.0
    assert metric(client, "input_drift_window_images") == 20
    assert metric(client, "input_mean_gray_level_count") == 40


def test_without_a_training_profile_the_index_is_nan_but_the_rest_is_measured(client: TestClient) -> None:
    _post(client, 128)
    assert math.isnan(metric(client, "input_drift_psi", statistic="contrast"))
    assert metric(client, "predictions_near_threshold_ratio") == 1.0
