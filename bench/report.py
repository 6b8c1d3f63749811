"""The results as a Markdown table (printed and written to bench/results/) and a JSON of raw figures."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import alternated
from bench.alternated import Alternated
from bench.ceiling import CeilingResult
from bench.corpora import DESCRIPTIONS
from bench.cpu import CpuRow
from bench.endtoend import EndToEnd
from bench.fairness import LARGE_CLIENTS, LARGE_FILES, SMALL_CONNECTIONS, FairnessResult
from bench.preprocessing import PreprocessingResult
from bench.targets import Target
from bench.training_speed import TrainingResult

RESULTS_DIR = Path(__file__).with_name("results")


@dataclass
class Results:
    machine: dict[str, Any]
    settings: dict[str, Any]
    ceiling: list[CeilingResult] = field(default_factory=list)
    preprocessing: list[PreprocessingResult] = field(default_factory=list)
    endtoend: EndToEnd = field(default_factory=EndToEnd)
    training: list[TrainingResult] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    cpu: list[CpuRow] = field(default_factory=list)
    fairness: FairnessResult | None = None
    fairness_error: str | None = None
    alternated: Alternated | None = None

    def to_json(self) -> dict[str, Any]:
        return _finite({
            "machine": self.machine,
            "settings": self.settings,
            "ceiling": [asdict(c) for c in self.ceiling],
            "preprocessing": [{**asdict(p), "speedup": p.speedup} for p in self.preprocessing],
            "endtoend": self.endtoend.to_json(),
            "training": [asdict(t) for t in self.training],
            "cpu": [{**asdict(c), "beyond_ms": c.beyond_ms} for c in self.cpu],
            "fairness": self.fairness.to_json() if self.fairness else None,
            "fairness_error": self.fairness_error,
            "alternated": asdict(self.alternated) if self.alternated else None,
            "targets": [{**asdict(t), "verdict": t.verdict, "margin": t.margin} for t in self.targets],
        })


def _finite(value: Any) -> Any:
    """NaN (a measurement that failed) becomes null, which JSON can hold."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _num(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    right = ["---:" if i else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(right) + "|"]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return [*lines, ""]


def _targets(targets: Sequence[Target]) -> list[str]:
    rows = [
        (t.name, t.formula, _num(t.value, 2), f"{t.direction} {t.bound:g}", t.verdict,
         "–" if t.margin is None else f"{t.margin:+.0%}")
        for t in targets
    ]
    return ["## Targets", "", *_table(("target", "ratio", "value", "bound", "verdict", "margin"), rows)]


def _ceiling(ceiling: Sequence[CeilingResult]) -> list[str]:
    rows = [(c.model, c.engine, c.precision, c.batch_size, _num(c.images_per_s), _num(c.ms_per_batch_p50, 2),
             _num(c.ms_per_batch_p99, 2), _num(c.cpu_ms_per_image, 2))
            for c in ceiling]  # fmt: skip
    return [
        "## Ceiling: the model alone", "",
        "Random inputs, one caller. fp32/int8: onnxruntime with the service's `session_options`; served: the "
        "variant the service's ENGINE/PRECISION settings choose, through its own engine; served-fp32: "
        "PRECISION=fp32 on that engine.", "",
        *_table(("model", "engine", "precision", "batch", "images/s", "ms/batch p50", "ms/batch p99",
                 "core-ms/image"), rows),
    ]


def _preprocessing(results: Sequence[PreprocessingResult]) -> list[str]:
    rows = [
        (f"{p.corpus} ({DESCRIPTIONS.get(p.corpus, '')})", p.files, _num(p.mean_kib, 0), _num(p.service_ms_p50, 2),
         _num(p.service_ms_mean, 2), _num(p.full_decode_ms_p50, 2), _num(p.full_decode_ms_mean, 2),
         f"{p.speedup:.1f}x")
        for p in results
    ]
    headers = ("corpus", "files", "mean KiB", "preprocess_bytes p50 ms", "mean ms", "full decode p50 ms",
               "mean ms", "speed-up (mean)")
    return [
        "## Preprocessing alone", "",
        "One thread. `preprocess_bytes` (JPEG draft) against a full-size decode (`open → convert('L') → "
        "resize 100x100 bilinear`, baseline (b)'s).", "",
        *_table(headers, rows),
    ]


def _endtoend(endtoend: EndToEnd) -> list[str]:
    rows = [
        (r.server, r.corpus, r.connections, _num(r.requests_per_s), _num(r.p50_ms), _num(r.p90_ms),
         _num(r.p99_ms), r.requests, r.non_2xx, r.socket_errors, _num(r.peak_rss_mib, 0),
         _num(r.core_ms_per_request, 2), _num(r.cores_busy, 2))
        for r in endtoend.rows
    ]
    headers = ("server", "corpus", "conn", "req/s", "p50 ms", "p90 ms", "p99 ms", "requests", "non-2xx",
               "socket errors", "peak RSS MiB", "core-ms/req", "cores busy")
    servers = [
        (s.server, _num(s.startup_s, 2), _num(s.rss_at_ready_mib, 0), _num(s.peak_rss_under_load_mib, 0),
         s.error or "")
        for s in endtoend.servers
    ]
    return [
        "## End to end", "",
        "Each server a real process on 127.0.0.1; wrk posts raw image bodies (rotating through the corpus) "
        "over N keep-alive connections, a closed loop.", "",
        *_table(headers, rows),
        "### Servers", "",
        *_table(("server", "start-up to ready s", "RSS at ready MiB", "peak RSS under load MiB", "error"), servers),
    ]


def _cpu(rows: Sequence[CpuRow]) -> list[str]:
    table = [(r.server, r.corpus, r.connections, _num(r.core_ms_per_request, 2), _num(r.model_core_ms, 2),
              _num(r.decode_core_ms, 2), _num(r.beyond_ms, 2))
             for r in rows]  # fmt: skip
    return [
        "## CPU per request", "",
        "Core-ms per request: the server's process tree's CPU time (utime + stime from /proc) over a wrk run ÷ "
        "the requests answered. Model: the same file on the same engine alone, the cheapest core-ms per image "
        "of its ceiling rows; decode: this server's decode alone, one thread; beyond: what the server spends "
        "on everything else (HTTP, hand-offs, scheduling).", "",
        *_table(("server", "corpus", "conn", "core-ms/req", "model core-ms", "decode core-ms", "beyond core-ms"),
                table),
    ]


def _fairness(result: FairnessResult | None, error: str | None) -> list[str]:
    lines = [
        "## Fairness: small requests beside large uploads", "",
        f"{SMALL_CONNECTIONS} wrk connections post ELPV cells alone, then beside {LARGE_CLIENTS} clients each "
        f"posting, in a loop, one multipart request of {LARGE_FILES} x 64-megapixel PNGs (Retry-After honoured, "
        "capped at 2 s); default settings.", "",
    ]
    if result is None:
        return [*lines, f"Not measured: {error}", ""] if error else []
    rows = [
        (phase, _num(r.requests_per_s), _num(r.p50_ms), _num(r.p99_ms), _num(r.max_ms), r.requests, r.non_2xx,
         r.socket_errors)
        for phase, r in (("alone", result.alone), ("beside the large uploads", result.beside))
    ]
    large = ", ".join(f"{n} x {status}" for status, n in sorted(result.large.answers.items())) or "none answered"
    errors = ", ".join(f"{n} x {kind}" for kind, n in sorted(result.large.errors.items()))
    return [
        *lines,
        *_table(("small requests", "req/s", "p50 ms", "p99 ms", "max ms", "requests", "non-2xx", "socket errors"),
                rows),
        f"- {result.duration_s} s each; p99 beside ÷ alone: {_num(result.p99_ratio, 2)}; small requests refused or "
        f"failed beside: {result.small_failures}",
        f"- Large requests ({result.large_png_bytes / 1e6:.1f} MB a PNG): {result.large.requests} sent; answers "
        f"{large}" + (f"; transport errors {errors}" if errors else ""),
        "",
    ]


def _training(training: Sequence[TrainingResult]) -> list[str]:
    rows = [(t.precision, t.batch_size, t.images, _num(t.images_per_s, 1), t.error or "") for t in training]
    return [
        "## Training throughput", "",
        "The full seed CNN, one epoch of random images after a warm-up fit.", "",
        *_table(("precision", "batch", "images", "images/s", "error"), rows),
    ]


def _header(results: Results) -> list[str]:
    m, s = results.machine, results.settings
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    lines = [
        f"# Benchmark {m['date']} on {m['host']}" + (" (quick smoke run: figures are not comparable)"
                                                    if s.get("quick") else ""),
        "",
        f"- CPU: {m['cpu']}; {m['cores_available']} cores available ({m['cores_online']} online), "
        f"{m['threads_per_core']} thread(s) per core; {m['memory_gib']} GiB; ISA: {', '.join(m['isa'])}",
        f"- OS: {m['os']}; {versions}",
        f"- Load average at start: {m['load_average_1min']}",
        f"- Model: {s['model']} ({s['model_name']}, sha256 {s['model_sha256']}); INT8: {s['int8_model'] or 'none'}",
        f"- wrk: {s['duration_s']:g} s per run after a {s['warmup_s']:g} s warm-up per corpus; connections "
        f"{', '.join(map(str, s['connections']))}; service env: {s['service_env'] or 'defaults'}",
        "",
    ]
    if float(m["load_average_1min"]) > 0.5 * float(m["cores_available"]):
        lines += ["> The machine was busy when the run started: these figures are distorted.", ""]
    return lines


def render(results: Results) -> str:
    lines = _header(results)
    if results.targets:
        lines += _targets(results.targets)
    if results.ceiling:
        lines += _ceiling(results.ceiling)
    if results.preprocessing:
        lines += _preprocessing(results.preprocessing)
    if results.endtoend.rows or results.endtoend.servers:
        lines += _endtoend(results.endtoend)
    if results.cpu:
        lines += _cpu(results.cpu)
    if results.alternated:
        lines += alternated.render(results.alternated)
    lines += _fairness(results.fairness, results.fairness_error)
    if results.training:
        lines += _training(results.training)
    return "\n".join(lines)


def write(results: Results, out_dir: Path, stem: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown, raw = out_dir / f"{stem}.md", out_dir / f"{stem}.json"
    markdown.write_text(render(results))
    raw.write_text(json.dumps(results.to_json(), indent=2, allow_nan=False) + "\n")
    return markdown, raw
