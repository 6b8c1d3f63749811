"""Preprocessing alone, per corpus: the service's preprocess_bytes, a full-size decode (baselines (a), (b)) and
baseline (c)'s draft decode, one thread; wall time and core-ms (process CPU time) per image."""

from __future__ import annotations

from dataclasses import dataclass

from bench.baselines import decode_full
from bench.baselines.openvino_app import decode_draft
from bench.corpora import Corpus
from bench.timing import repeat
from service.core.preprocessing import preprocess_bytes


@dataclass(frozen=True)
class PreprocessingResult:
    corpus: str
    files: int
    mean_kib: float
    service_ms_p50: float
    service_ms_mean: float
    full_decode_ms_p50: float
    full_decode_ms_mean: float
    # Core-ms per image: what each server's decode alone costs (bench/cpu.py subtracts it).
    service_cpu_ms: float | None = None
    full_decode_cpu_ms: float | None = None
    draft_decode_cpu_ms: float | None = None

    @property
    def speedup(self) -> float:
        return self.full_decode_ms_mean / self.service_ms_mean


def measure(corpus: Corpus, seconds: float) -> PreprocessingResult:
    payloads = corpus.payloads()
    # Every file at least once, so a corpus of a few big photos is not judged by its first one.
    service = repeat(lambda i: preprocess_bytes(payloads[i % len(payloads)]), seconds, min_calls=len(payloads))
    full = repeat(lambda i: decode_full(payloads[i % len(payloads)]), seconds, min_calls=len(payloads))
    draft = repeat(lambda i: decode_draft(payloads[i % len(payloads)]), seconds, min_calls=len(payloads))
    return PreprocessingResult(
        corpus=corpus.name,
        files=len(payloads),
        mean_kib=corpus.mean_bytes() / 1024,
        service_ms_p50=service.percentile_ms(50),
        service_ms_mean=service.total_s / service.calls * 1000,
        full_decode_ms_p50=full.percentile_ms(50),
        full_decode_ms_mean=full.total_s / full.calls * 1000,
        service_cpu_ms=service.cpu_ms_per(),
        full_decode_cpu_ms=full.cpu_ms_per(),
        draft_decode_cpu_ms=draft.cpu_ms_per(),
    )
