"""bench.targets: the ratios from the figures of one run."""

from __future__ import annotations

import pytest

from bench.ceiling import SERVED, SERVED_FP32, CeilingResult
from bench.cpu import CpuRow
from bench.endtoend import LoadRow
from bench.preprocessing import PreprocessingResult
from bench.targets import BASELINE_ONNX, BASELINE_OPENVINO, SERVICE, SERVICE_FP32, evaluate, request_path_targets


def load_row(server: str, corpus: str, connections: int, rps: float, p99: float) -> LoadRow:
    return LoadRow(server, corpus, connections, rps, None, None, p99, None, 100, 0, 0, None)


def ceiling_row(label: str, batch: int, images_per_s: float, p50_ms: float) -> CeilingResult:
    return CeilingResult(label, batch, images_per_s, p50_ms, p50_ms, 10, "openvino", "int8")


def test_the_targets_compare_the_served_variant_and_the_baseline_of_the_same_run() -> None:
    ceiling = [
        ceiling_row("fp32", 1, 90.0, 11.0),  # onnxruntime fp32: not what a lone request is judged against
        ceiling_row(SERVED, 1, 300.0, 3.0),
        ceiling_row(SERVED, 8, 320.0, 25.0),
        ceiling_row(SERVED_FP32, 8, 80.0, 100.0),
    ]
    prep = [PreprocessingResult("elpv", 64, 34.0, 1.0, 1.0, 1.0, 1.0),
            PreprocessingResult("photo-2mp", 6, 491.0, 6.0, 6.0, 11.0, 11.0)]
    rows = [
        load_row(SERVICE, "elpv", 16, 240.0, 90.0), load_row(BASELINE_ONNX, "elpv", 16, 75.0, 900.0),
        load_row(SERVICE, "photo-2mp", 16, 100.0, 200.0), load_row(BASELINE_ONNX, "photo-2mp", 16, 42.0, 900.0),
        load_row(SERVICE_FP32, "elpv", 16, 70.0, 300.0),
        load_row(SERVICE, "elpv", 1, 150.0, 5.0), load_row(SERVICE, "photo-2mp", 1, 80.0, 12.0),
    ]
    found = {t.name: t for t in evaluate(ceiling, prep, rows, ["elpv", "photo-2mp"])}

    elpv = found["elpv 16 conn: service vs baseline (b)"]
    assert (elpv.value, elpv.bound, elpv.verdict) == (pytest.approx(3.2), 3.0, "PASS")
    photo = found["photo-2mp 16 conn: service vs baseline (b)"]
    assert (photo.value, photo.bound, photo.verdict) == (pytest.approx(100 / 42), 2.5, "MISS")
    fp32 = found["elpv 16 conn: service PRECISION=fp32 vs its engine's fp32 batch-8 ceiling"]
    assert (fp32.value, fp32.verdict) == (pytest.approx(0.875), "MISS")
    lone = found["elpv 1 conn: service p99 vs model + preprocessing"]
    assert (lone.value, lone.verdict) == (pytest.approx(5.0 / 4.0), "PASS")  # 3 ms served batch 1 + 1 ms
    assert found["photo-2mp 1 conn: service p99 vs model + preprocessing"].value == pytest.approx(12.0 / 9.0)
    assert found["elpv 16 conn: service vs baseline (a)"].verdict == "n/a"


def test_the_service_is_judged_against_baseline_c_on_speed_lone_latency_and_its_own_work() -> None:
    rows = [
        load_row(SERVICE, "elpv", 16, 230.0, 90.0), load_row(BASELINE_OPENVINO, "elpv", 16, 227.0, 95.0),
        load_row(SERVICE, "photo-2mp", 16, 140.0, 200.0), load_row(BASELINE_OPENVINO, "photo-2mp", 16, 153.0, 180.0),
        load_row(SERVICE, "elpv", 1, 100.0, 10.0), load_row(BASELINE_OPENVINO, "elpv", 1, 90.0, 12.0),
    ]
    cpu = [CpuRow(SERVICE, "elpv", 16, 6.0, 3.0, 1.0), CpuRow(BASELINE_OPENVINO, "elpv", 16, 5.0, 3.0, 1.0),
           CpuRow(SERVICE, "photo-2mp", 16, 9.0, 3.0, 5.0), CpuRow(BASELINE_OPENVINO, "photo-2mp", 16, 7.5, 3.0, 5.0)]
    found = {t.name: t for t in request_path_targets(rows, ["elpv", "photo-2mp"], cpu, None)}

    assert found["elpv 16 conn: service vs baseline (c)"].value == pytest.approx(230 / 227)
    assert found["elpv 16 conn: service vs baseline (c)"].verdict == "PASS"
    assert found["photo-2mp 16 conn: service vs baseline (c)"].verdict == "MISS"
    lone = found["elpv 1 conn: service p99 vs baseline (c)'s"]
    assert (lone.value, lone.verdict) == (pytest.approx(10 / 12), "PASS")
    work = found["elpv 16 conn: service core-ms beyond model and decode vs baseline (c)'s"]
    assert (work.value, work.verdict) == (pytest.approx(2.0 / 1.0), "MISS")
    # Baseline (c) spending nothing beyond the model and decode leaves no ratio to judge.
    assert found["photo-2mp 16 conn: service core-ms beyond model and decode vs baseline (c)'s"].value is None
