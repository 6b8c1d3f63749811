"""Live quality's costs, as the issue's targets in one run: `python -m bench.quality --duration 10`.

- the SQLite prediction log on vs off: /predict images/s at 16 connections (target: at least 0.95);
- a shadow version (SHADOW_SAMPLE=1.0) vs none: /predict at 16 connections, where the CPU is saturated
  (target: at least 0.9), and p99 at 1 connection (target: at most 1.2x); with the share of served images the
  shadow actually scored.

Each configuration is a fresh `python -m service` (bench/servers.py) on ELPV cells (bench/corpora.py), loaded by
wrk (bench/load.py) after a short warm-up; every server keeps its log in its own temporary DATA_DIR. The shadow
runs serve MODEL_DIR version 1; the version poller finds version 2 (the same model files) and puts it in shadow
before the load starts. One run
per figure: on a shared machine, repeat it before trusting a margin of a few percent.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench import corpora, load
from bench.servers import REPO_ROOT, Server, service_spec
from bench.targets import Target

log = logging.getLogger("bench.quality")
# The version poller's period in the shadow configurations (with and without a shadow, so both pay for it).
POLL_S = "0.5"
MODEL_FILES = ("model.onnx", "model.int8.onnx", "model.int8.json", "model.json")


@dataclass(frozen=True)
class Run:
    config: str
    connections: int
    requests_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    non_2xx: int
    socket_errors: int
    images_served: float
    shadow_scored: float
    shadow_skipped: float
    log_written: float
    log_dropped: float


def _metrics(url: str) -> dict[str, float]:
    """Every sample of GET /metrics that quality reads, by name and labels."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}"] = sample.value
    return values


def _sum(values: Mapping[str, float], name: str) -> float:
    """The samples of `name` summed over their labels; `name{label=value` narrows it to those labels."""
    prefix = name if "{" in name else name + "{"
    return sum(v for k, v in values.items() if k.startswith(prefix))


def _versions(folder: Path, model: Path, versions: int) -> Path:
    for version in range(1, versions + 1):
        target = folder / str(version)
        target.mkdir(parents=True, exist_ok=True)
        for name in MODEL_FILES:
            if (model.parent / name).exists():
                shutil.copy(model.parent / name, target / name)
    return folder


def measure(
    config: str, env: Mapping[str, str], corpus: corpora.Corpus, connections: tuple[int, ...], duration_s: int,
    warmup_s: int, work: Path, model: Path, shadow_from: Path | None = None,
) -> list[Run]:
    """One server: optional reload into shadow, warm-up, then one wrk run per connection count."""
    server = Server(service_spec(config, model, {"DATA_DIR": str(work / config / "data"), **env}), work)
    rows = []
    with server:
        if shadow_from is not None:  # the poller finds version 2 and puts it in shadow
            _versions(shadow_from, model, 2)
            deadline = time.monotonic() + 120
            while _metrics(server.url).get("model_version_shadow{version=2}") != 1:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{config}: version 2 was not in shadow within 120 s (log: {server.log_path})")
                time.sleep(0.2)
        load.run(server.url, corpus.list_file, max(connections), warmup_s)
        for count in connections:
            server.wait_idle()
            before = _metrics(server.url)
            result = load.run(server.url, corpus.list_file, count, duration_s)
            server.wait_idle()
            after = _metrics(server.url)

            def delta(name: str, before: dict[str, float] = before, after: dict[str, float] = after) -> float:
                return _sum(after, name) - _sum(before, name)

            rows.append(Run(
                config, count, result.requests_per_s, result.p50_ms, result.p99_ms, result.non_2xx,
                result.socket_errors, delta("images_predicted_total"),
                delta("shadow_images_total{outcome=scored"), delta("shadow_images_total{outcome=skipped"),
                delta("prediction_log_rows_total"), delta("prediction_log_dropped_total"),
            ))
            log.info("%s", rows[-1])
    return rows


def _find(rows: list[Run], config: str, connections: int) -> Run | None:
    return next((r for r in rows if (r.config, r.connections) == (config, connections)), None)


def targets(rows: list[Run]) -> list[Target]:
    def ratio(a: Run | None, b: Run | None, field: str) -> float | None:
        if a is None or b is None or not getattr(b, field):
            return None
        return getattr(a, field) / getattr(b, field)

    return [
        Target("prediction log on vs off, /predict at 16 connections", "log-on rps / log-off rps",
               ratio(_find(rows, "log-on", 16), _find(rows, "log-off", 16), "requests_per_s"), 0.95, ">="),
        Target("shadow (SHADOW_SAMPLE=1.0) vs none, /predict at 16 connections", "shadow rps / no-shadow rps",
               ratio(_find(rows, "shadow", 16), _find(rows, "no-shadow", 16), "requests_per_s"), 0.9, ">="),
        Target("shadow vs none, p99 at 1 connection", "shadow p99 / no-shadow p99",
               ratio(_find(rows, "shadow", 1), _find(rows, "no-shadow", 1), "p99_ms"), 1.2, "<="),
    ]


def report(rows: list[Run], found: list[Target]) -> str:
    lines = ["| config | connections | requests/s | p50 ms | p99 ms | non-2xx | images | shadow scored | "
             "shadow skipped | log rows written | log rows dropped |", "|" + "---|" * 11]
    for r in rows:
        lines.append(
            f"| {r.config} | {r.connections} | {r.requests_per_s:.1f} | {r.p50_ms or 0:.1f} | {r.p99_ms or 0:.1f} | "
            f"{r.non_2xx} | {r.images_served:.0f} | {r.shadow_scored:.0f} | {r.shadow_skipped:.0f} | "
            f"{r.log_written:.0f} | {r.log_dropped:.0f} |"
        )
    lines += ["", "| target | formula | value | bound | verdict |", "|---|---|---|---|---|"]
    for t in found:
        value = "n/a" if t.value is None else f"{t.value:.3f}"
        lines.append(f"| {t.name} | {t.formula} | {value} | {t.direction} {t.bound} | {t.verdict} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=20, help="seconds per wrk run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of load before the measured runs")
    parser.add_argument("--model", type=Path, default=REPO_ROOT / "models" / "model.onnx")
    parser.add_argument("--out", type=Path, help="also write the rows and targets as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    (corpus,) = corpora.load(["elpv"])
    rows: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as folder:
        work = Path(folder)
        rows += measure("log-off", {"PREDICTION_LOG": "false"}, corpus, (16,), args.duration, args.warmup, work,
                        args.model)
        rows += measure("log-on", {}, corpus, (16,), args.duration, args.warmup, work, args.model)
        for config, shadow in (("no-shadow", False), ("shadow", True)):
            versions = _versions(work / config / "versions", args.model, 1)
            env = {"MODEL_DIR": str(versions), "ROLLOUT": "shadow", "SHADOW_SAMPLE": "1.0",
                   "MODEL_POLL_INTERVAL_S": POLL_S}
            rows += measure(config, env, corpus, (16, 1), args.duration, args.warmup, work, args.model,
                            shadow_from=versions if shadow else None)
    found = targets(rows)
    print(report(rows, found))
    if args.out is not None:
        args.out.write_text(json.dumps({"rows": [asdict(r) for r in rows],
                                        "targets": [{**asdict(t), "verdict": t.verdict} for t in found]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
