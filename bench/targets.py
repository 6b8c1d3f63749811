"""The issue's targets as ratios of measured figures, each PASS or MISS with its margin."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from bench.ceiling import SERVED, SERVED_FP32, CeilingResult
from bench.endtoend import LoadRow
from bench.preprocessing import PreprocessingResult

if TYPE_CHECKING:  # bench.cpu and bench.fairness name this module's servers
    from bench.cpu import CpuRow
    from bench.fairness import FairnessResult

SERVICE: Final = "service"
SERVICE_INT8: Final = "service-int8"
SERVICE_FP32: Final = "service-fp32"  # the service with PRECISION=fp32
SERVICE_LOG_OFF: Final = "service-log-off"  # the service with PREDICTION_LOG=false
SERVICE_GRANIAN: Final = "service-granian"  # the service with HTTP_SERVER=granian
BASELINE_KERAS: Final = "baseline-a-keras"
BASELINE_ONNX: Final = "baseline-b-onnx"
BASELINE_OPENVINO: Final = "baseline-c-openvino"  # the 25-line FastAPI + OpenVINO server


@dataclass(frozen=True)
class Target:
    name: str
    formula: str
    value: float | None  # None: a figure it needs was not measured
    bound: float
    direction: Literal[">=", "<="]

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "n/a"
        met = self.value >= self.bound if self.direction == ">=" else self.value <= self.bound
        return "PASS" if met else "MISS"

    @property
    def margin(self) -> float | None:
        """How far past the bound, as a fraction of it: positive passes, negative misses (None for a bound of 0)."""
        if self.value is None or self.bound == 0:
            return None
        beyond = self.value - self.bound if self.direction == ">=" else self.bound - self.value
        return beyond / self.bound


def _row(rows: Sequence[LoadRow], server: str, corpus: str, connections: int) -> LoadRow | None:
    return next((r for r in rows if (r.server, r.corpus, r.connections) == (server, corpus, connections)), None)


def _rps(rows: Sequence[LoadRow], server: str, corpus: str, connections: int) -> float | None:
    row = _row(rows, server, corpus, connections)
    return None if row is None else row.requests_per_s


def _p99(rows: Sequence[LoadRow], server: str, corpus: str, connections: int) -> float | None:
    row = _row(rows, server, corpus, connections)
    return None if row is None else row.p99_ms


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _ceiling(ceiling: Sequence[CeilingResult], model: str, batch: int) -> CeilingResult | None:
    return next((c for c in ceiling if (c.model, c.batch_size) == (model, batch)), None)


def evaluate(
    ceiling: Sequence[CeilingResult],
    preprocessing: Sequence[PreprocessingResult],
    rows: Sequence[LoadRow],
    corpora: Sequence[str],
    cpu: Sequence[CpuRow] = (),
    fairness: FairnessResult | None = None,
) -> list[Target]:
    """The request path's targets against baseline (c) and the fairness scenario (`request_path_targets`), then
    issue 13's targets (the service with its default settings, i.e. the variant PRECISION=auto serves, against
    the straightforward server (b); PRECISION=fp32 against its engine's batch-8 ceiling; a lone request against
    the served variant's batch-1 latency plus preprocessing), then issue 1's against baseline (a)."""
    served1 = _ceiling(ceiling, SERVED, 1)
    fp32_batch8 = _ceiling(ceiling, SERVED_FP32, 8)
    targets = [
        Target(
            f"{corpus} 16 conn: service vs baseline (b)",
            "service req/s ÷ baseline-b req/s",
            _ratio(_rps(rows, SERVICE, corpus, 16), _rps(rows, BASELINE_ONNX, corpus, 16)),
            3.0 if corpus == "elpv" else 2.5, ">=",
        )
        for corpus in corpora
    ]
    targets.append(
        Target(
            "elpv 16 conn: service PRECISION=fp32 vs its engine's fp32 batch-8 ceiling",
            "service-fp32 req/s ÷ served-fp32 batch-8 images/s",
            _ratio(_rps(rows, SERVICE_FP32, "elpv", 16), fp32_batch8.images_per_s if fp32_batch8 else None),
            0.9, ">=",
        )
    )
    for corpus in corpora:
        prep = next((p for p in preprocessing if p.corpus == corpus), None)
        floor = served1.ms_per_batch_p50 + prep.service_ms_p50 if served1 and prep else None
        targets.append(
            Target(
                f"{corpus} 1 conn: service p99 vs model + preprocessing",
                "p99 ÷ (served variant batch-1 p50 ms + preprocess_bytes p50 ms)",
                _ratio(_p99(rows, SERVICE, corpus, 1), floor),
                1.3, "<=",
            )
        )
    for corpus in corpora:
        targets.append(
            Target(
                f"{corpus} 16 conn: service vs baseline (a)",
                "service req/s ÷ baseline-a req/s",
                _ratio(_rps(rows, SERVICE, corpus, 16), _rps(rows, BASELINE_KERAS, corpus, 16)),
                5.0, ">=",
            )
        )
    return request_path_targets(rows, corpora, cpu, fairness) + targets


def _beyond(cpu: Sequence[CpuRow], server: str, corpus: str, connections: int) -> float | None:
    row = next((r for r in cpu if (r.server, r.corpus, r.connections) == (server, corpus, connections)), None)
    return None if row is None else row.beyond_ms


def request_path_targets(
    rows: Sequence[LoadRow], corpora: Sequence[str], cpu: Sequence[CpuRow], fairness: FairnessResult | None
) -> list[Target]:
    """Never slower than baseline (c), the 25-line FastAPI + OpenVINO server, at 16 connections nor for a lone
    request; no more work of its own per request (core-ms beyond the model and the decode); small requests
    beside large uploads at most 5x their p99 alone, none refused or failed."""
    targets = [
        Target(
            f"{corpus} 16 conn: service vs baseline (c)",
            "service req/s ÷ baseline-c req/s",
            _ratio(_rps(rows, SERVICE, corpus, 16), _rps(rows, BASELINE_OPENVINO, corpus, 16)),
            1.0, ">=",
        )
        for corpus in corpora
    ]
    targets.append(
        Target(
            "elpv 1 conn: service p99 vs baseline (c)'s",
            "service p99 ÷ baseline-c p99",
            _ratio(_p99(rows, SERVICE, "elpv", 1), _p99(rows, BASELINE_OPENVINO, "elpv", 1)),
            1.0, "<=",
        )
    )
    for corpus in corpora:
        service, baseline = _beyond(cpu, SERVICE, corpus, 16), _beyond(cpu, BASELINE_OPENVINO, corpus, 16)
        targets.append(
            Target(
                f"{corpus} 16 conn: service core-ms beyond model and decode vs baseline (c)'s",
                "(service core-ms/request − model − decode) ÷ baseline-c's",
                _ratio(service, baseline) if baseline is None or baseline > 0 else None,
                1.0, "<=",
            )
        )
    if fairness is not None:
        targets += [
            Target("elpv beside 16 x 64 MP uploads: small p99 vs alone", "p99 beside ÷ p99 alone",
                   fairness.p99_ratio, 5.0, "<="),
            Target("elpv beside 16 x 64 MP uploads: small requests refused or failed", "non-2xx + socket errors",
                   float(fairness.small_failures), 0.0, "<="),
        ]  # fmt: skip
    return targets
