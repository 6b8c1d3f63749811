"""CPU per request in core-ms: a server's process tree's CPU time over the requests it served under wrk, beside
what the model and the decode cost alone, so the work a server adds around them can be compared."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench import targets
from bench.ceiling import SERVED, SERVED_FP32, CeilingResult
from bench.endtoend import LoadRow
from bench.preprocessing import PreprocessingResult


@dataclass(frozen=True)
class CpuRow:
    server: str
    corpus: str
    connections: int
    core_ms_per_request: float | None
    model_core_ms: float | None  # the same model file on the same engine, alone (bench/ceiling.py)
    decode_core_ms: float | None  # this server's decode alone, one thread (bench/preprocessing.py)

    @property
    def beyond_ms(self) -> float | None:
        """The server's own work per request: everything but the model and the decode."""
        if self.core_ms_per_request is None or self.model_core_ms is None or self.decode_core_ms is None:
            return None
        return self.core_ms_per_request - self.model_core_ms - self.decode_core_ms


def model_core_ms(ceiling: Sequence[CeilingResult], label: str) -> float | None:
    """The cheapest core-ms per image of that model row at any batch size: the model's own cost, so what a
    server spends beyond it is an upper bound on its overhead."""
    costs = [c.cpu_ms_per_image for c in ceiling if c.model == label and c.cpu_ms_per_image is not None]
    return min(costs, default=None)


# Which model row and which decode each server runs. Baseline (c) runs the file the service serves
# (bench.ceiling.served_file) on OpenVINO, which ENGINE=auto serves too; baseline (b) the fp32 file on
# onnxruntime; baseline (a)'s Keras model has no row.
_MODEL = {
    targets.SERVICE: SERVED, targets.SERVICE_INT8: SERVED, targets.SERVICE_FP32: SERVED_FP32,
    targets.SERVICE_LOG_OFF: SERVED, targets.SERVICE_GRANIAN: SERVED,
    targets.BASELINE_OPENVINO: SERVED, targets.BASELINE_ONNX: "fp32",
}
_DECODE = {
    targets.SERVICE: "service_cpu_ms", targets.SERVICE_INT8: "service_cpu_ms",
    targets.SERVICE_LOG_OFF: "service_cpu_ms", targets.SERVICE_GRANIAN: "service_cpu_ms",
    targets.SERVICE_FP32: "service_cpu_ms", targets.BASELINE_OPENVINO: "draft_decode_cpu_ms",
    targets.BASELINE_ONNX: "full_decode_cpu_ms", targets.BASELINE_KERAS: "full_decode_cpu_ms",
}


def breakdown(
    rows: Sequence[LoadRow], ceiling: Sequence[CeilingResult], preprocessing: Sequence[PreprocessingResult]
) -> list[CpuRow]:
    """One CpuRow per load row that measured its CPU."""
    decodes = {p.corpus: p for p in preprocessing}
    served = next((c for c in ceiling if c.model == SERVED), None)
    # The served rows stand for baseline (c)'s model only on OpenVINO, and for service-int8's (MODEL_PATH=the
    # INT8 file) only when the default settings serve INT8 too.
    unmatched = {
        targets.BASELINE_OPENVINO: served is None or served.engine != "openvino",
        targets.SERVICE_INT8: served is None or served.precision != "int8",
    }
    out = []
    for row in rows:
        if row.core_ms_per_request is None:
            continue
        label = None if unmatched.get(row.server) else _MODEL.get(row.server)
        prep = decodes.get(row.corpus)
        decode = getattr(prep, _DECODE[row.server]) if prep is not None and row.server in _DECODE else None
        out.append(CpuRow(row.server, row.corpus, row.connections, row.core_ms_per_request,
                          model_core_ms(ceiling, label) if label else None, decode))  # fmt: skip
    return out
