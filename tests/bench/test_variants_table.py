"""bench.variants' table: one row per variant, ratios against the baseline of the same run."""

from __future__ import annotations

from bench.variants import render


def test_the_table_gives_each_variant_its_ratio_to_the_baseline_of_the_same_run() -> None:
    row = {
        "engine": "openvino", "precision": "int8", "file": "model.int8.onnx", "batch1_p50_ms": 8.0,
        "batch8_images_per_s": 90.0, "accuracy": 0.8338, "roc_auc": 0.87, "max_probability_difference": 0.04,
        "rps": {1: 100.0, 16: 60.0}, "p99_ms": {1: 20.0, 16: 300.0}, "lone_target_ms": 12.0, "error": None,
    }
    failed = {**row, "precision": "bf16", "rps": {}, "p99_ms": {}, "accuracy": None, "error": "did not start"}
    results = {
        "machine": {"date": "d", "host": "h", "cpu": "c", "cores_available": 2, "isa": ["avx2"],
                    "load_average_1min": 9.0},
        "preprocess_p50_ms": 1.2, "connections": [1, 16], "duration_s": 8, "command": "python -m bench.variants",
        "rows": [row, failed], "baseline": {1: {"rps": 10.0, "p99_ms": 50.0}, 16: {"rps": 20.0, "p99_ms": 900.0}},
    }
    lines = render(results).splitlines()
    assert "| openvino | int8 | 8.00 | 90.0 | 100.0 | 60.0 | 20.0 | 12.0 | 0.8338 | 0.0400 | 10.00 | 3.00 |" in lines
    assert "| openvino | bf16 | 8.00 | 90.0 | – | – | – | 12.0 | – | 0.0400 | – | – |" in lines
    assert lines[-1] == "| baseline-b-onnx | fp32 | | | 10.0 | 20.0 | 50.0 | | | | 1.00 | 1.00 |"
