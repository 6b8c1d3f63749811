"""bench.cpu and the process-CPU figures behind it: core-ms per request and the work beyond model and decode."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench.ceiling import SERVED, SERVED_FP32, CeilingResult
from bench.cpu import CpuRow, breakdown, model_core_ms
from bench.endtoend import LoadRow
from bench.preprocessing import PreprocessingResult
from bench.servers import core_ms_per_request, process_tree_cpu_s
from bench.targets import BASELINE_KERAS, BASELINE_ONNX, BASELINE_OPENVINO, SERVICE, SERVICE_FP32, SERVICE_INT8
from bench.timing import Timings


def test_core_ms_per_request_divides_cpu_seconds_by_requests_answered() -> None:
    assert core_ms_per_request(3.0, 1000) == pytest.approx(3.0)
    assert core_ms_per_request(0.5, 0) is None


def test_timings_count_every_threads_cpu_per_item() -> None:
    # 10 calls of batch 8 that kept two cores busy for 0.4 s in all: 0.8 core-s over 80 images.
    timings = Timings(np.full(10, 0.04), cpu_s=0.8)
    assert timings.cpu_ms_per(8) == pytest.approx(10.0)
    assert timings.cpu_ms_per() == pytest.approx(80.0)


def ceiling_row(label: str, batch: int, cpu_ms: float | None) -> CeilingResult:
    return CeilingResult(label, batch, 100.0, 1.0, 1.0, 10, "openvino", "int8", cpu_ms)


def test_the_models_core_ms_is_its_cheapest_row() -> None:
    ceiling = [ceiling_row(SERVED, 1, 4.5), ceiling_row(SERVED, 8, 3.2), ceiling_row(SERVED_FP32, 8, 9.0),
               ceiling_row("fp32", 1, None)]
    assert model_core_ms(ceiling, SERVED) == pytest.approx(3.2)
    assert model_core_ms(ceiling, "fp32") is None
    assert model_core_ms(ceiling, "int8") is None


def load_row(server: str, core_ms: float | None) -> LoadRow:
    return LoadRow(server, "elpv", 16, 200.0, None, None, None, None, 4000, 0, 0, None, core_ms)


def test_each_server_is_charged_its_own_model_and_decode() -> None:
    ceiling = [ceiling_row(SERVED, 1, 4.0), ceiling_row(SERVED, 8, 3.0), ceiling_row(SERVED_FP32, 8, 8.0),
               ceiling_row("fp32", 1, 9.0)]
    prep = [PreprocessingResult("elpv", 64, 34.0, 1.0, 1.0, 1.0, 1.0, service_cpu_ms=0.9,
                                full_decode_cpu_ms=1.1, draft_decode_cpu_ms=1.0)]
    rows = [load_row(SERVICE, 5.5), load_row(BASELINE_OPENVINO, 5.0), load_row(BASELINE_ONNX, 12.0),
            load_row(SERVICE_FP32, 11.0), load_row(BASELINE_KERAS, 40.0), load_row("unmeasured", None)]

    found = {row.server: row for row in breakdown(rows, ceiling, prep)}

    assert set(found) == {SERVICE, BASELINE_OPENVINO, BASELINE_ONNX, SERVICE_FP32, BASELINE_KERAS}
    assert found[SERVICE].beyond_ms == pytest.approx(5.5 - 3.0 - 0.9)
    assert found[BASELINE_OPENVINO].beyond_ms == pytest.approx(5.0 - 3.0 - 1.0)
    assert found[BASELINE_ONNX].beyond_ms == pytest.approx(12.0 - 9.0 - 1.1)
    assert found[SERVICE_FP32].beyond_ms == pytest.approx(11.0 - 8.0 - 0.9)
    assert (found[BASELINE_KERAS].model_core_ms, found[BASELINE_KERAS].beyond_ms) == (None, None)


def test_a_row_without_its_model_or_decode_has_no_beyond() -> None:
    assert CpuRow(SERVICE, "elpv", 16, 5.0, None, 1.0).beyond_ms is None
    assert CpuRow(SERVICE, "elpv", 16, 5.0, 3.0, None).beyond_ms is None


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads Linux's /proc")
def test_the_process_trees_cpu_counts_a_busy_child() -> None:
    busy = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\ntime.sleep(5)"
    parent = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {busy!r}])"]
    )
    try:
        deadline = time.monotonic() + 20
        while process_tree_cpu_s(parent.pid) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.1)
        # The child's 0.3 s of spinning is the parent's tree's, though the parent itself only waits.
        assert process_tree_cpu_s(parent.pid) >= 0.3
    finally:
        children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children")
        for child in children.read_text().split() if children.exists() else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(child), signal.SIGKILL)
        parent.kill()
        parent.wait()


def test_the_served_model_stands_only_for_servers_that_run_the_same_variant() -> None:
    ceiling = [CeilingResult(SERVED, 1, 100.0, 1.0, 1.0, 10, "openvino", "fp32", 3.0)]
    rows = [load_row(SERVICE_INT8, 4.0), load_row(BASELINE_OPENVINO, 5.0)]
    found = {row.server: row for row in breakdown(rows, ceiling, [])}
    assert found[SERVICE_INT8].model_core_ms is None  # the INT8 file, while fp32 is what serves by default
    assert found[BASELINE_OPENVINO].model_core_ms == pytest.approx(3.0)

    ort = [CeilingResult(SERVED, 1, 100.0, 1.0, 1.0, 10, "onnxruntime", "int8", 3.0)]
    found = {row.server: row for row in breakdown(rows, ort, [])}
    assert found[SERVICE_INT8].model_core_ms == pytest.approx(3.0)
    assert found[BASELINE_OPENVINO].model_core_ms is None  # ENGINE=onnxruntime: not baseline (c)'s engine
