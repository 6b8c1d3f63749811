"""Live quality's costs, as the issue's targets in one run: `python -m bench.quality --duration 10 --rounds 3`.
The log at scale: `python -m bench.quality --rows 10000000 [--postgres]` (bench/quality_scale.py); the log
through a database outage: `python -m bench.quality --faults` (bench/quality_faults.py).

- the SQLite prediction log on vs off: /predict images/s at 16 connections (target: at least 0.95);
- a shadow version (SHADOW_SAMPLE=1.0) vs none: /predict at 16 connections, where the CPU is saturated
  (target: at least 0.9), and p99 at 1 connection (target: at most 1.2x); with the share of served images the
  shadow actually scored.

Each comparison starts both servers (`python -m service`, bench/servers.py; each with its own temporary
DATA_DIR) and loads them in turns with wrk (bench/load.py) on ELPV cells (bench/corpora.py): A B, then B A, ...
for --rounds rounds, so a neighbour's load on a shared machine falls on both alike; a target is the median of
the per-round ratios. The shadow pair serves MODEL_DIR version 1 with ROLLOUT=shadow in both; in one, the version
poller finds version 2 (the same model files) and puts it in shadow before the load starts.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import corpora, load, quality_faults, quality_scale
from bench.postgres import Postgres
from bench.servers import REPO_ROOT, Server, service_spec
from bench.targets import Target

log = logging.getLogger("bench.quality")
MODEL_FILES = ("model.onnx", "model.int8.onnx", "model.int8.json", "model.json")
# The version poller's period in the shadow pair (both servers, so both pay for it).
POLL_S = "0.5"


@dataclass(frozen=True)
class Run:
    config: str
    connections: int
    round: int
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


def _versions(folder: Path, model: Path, versions: int) -> Path:
    for version in range(1, versions + 1):
        target = folder / str(version)
        target.mkdir(parents=True, exist_ok=True)
        for name in MODEL_FILES:
            if (model.parent / name).exists():
                shutil.copy(model.parent / name, target / name)
    return folder


def _wait_for_shadow(server: Server) -> None:
    deadline = time.monotonic() + 120
    while quality_faults.metrics(server.url).get("model_version_shadow{version=2}") != 1:
        if time.monotonic() > deadline:
            raise RuntimeError(f"version 2 was not in shadow within 120 s (log: {server.log_path})")
        time.sleep(0.2)


def _one_run(server: Server, corpus: corpora.Corpus, connections: int, duration_s: int, round: int) -> Run:
    server.wait_idle()
    before = quality_faults.metrics(server.url)
    result = load.run(server.url, corpus.list_file, connections, duration_s)
    server.wait_idle()  # the shadow's and the writer's backlog counted in this run
    after = quality_faults.metrics(server.url)

    def delta(name: str) -> float:
        return quality_faults.metric_sum(after, name) - quality_faults.metric_sum(before, name)

    run = Run(
        server.spec.name, connections, round, result.requests_per_s, result.p50_ms, result.p99_ms, result.non_2xx,
        result.socket_errors, delta("images_predicted_total"), delta("shadow_images_total{outcome=scored"),
        delta("shadow_images_total{outcome=skipped"), delta("prediction_log_rows_total"),
        delta("prediction_log_dropped_total"),
    )
    log.info("%s", run)
    return run


def compare(
    pair: tuple[tuple[str, Mapping[str, str]], tuple[str, Mapping[str, str]]], corpus: corpora.Corpus,
    connections: tuple[int, ...], args: argparse.Namespace, work: Path, shadow_in: str | None = None,
) -> list[Run]:
    """Both servers up at once, loaded in turns (A B, B A, ...) for each connection count."""
    servers = [Server(service_spec(name, args.model, {"DATA_DIR": str(work / name / "data"), **env}), work)
               for name, env in pair]
    rows: list[Run] = []
    with servers[0], servers[1]:
        for server in servers:
            if server.spec.name == shadow_in:  # the poller finds version 2 and puts it in shadow
                _versions(Path(server.spec.env["MODEL_DIR"]), args.model, 2)
                _wait_for_shadow(server)
            load.run(server.url, corpus.list_file, max(connections), args.warmup)
        for count in connections:
            for round in range(args.rounds):
                for server in servers if round % 2 == 0 else reversed(servers):
                    rows.append(_one_run(server, corpus, count, args.duration, round))
    return rows


def _median_ratio(rows: list[Run], a: str, b: str, connections: int, field: str) -> float | None:
    ratios = []
    for round in sorted({r.round for r in rows}):
        mine = {r.config: getattr(r, field) for r in rows if (r.round, r.connections) == (round, connections)}
        if mine.get(a) is not None and mine.get(b):
            ratios.append(mine[a] / mine[b])
    return statistics.median(ratios) if ratios else None


def targets(rows: list[Run]) -> list[Target]:
    return [
        Target("prediction log on vs off, /predict at 16 connections", "median over rounds of log-on / log-off rps",
               _median_ratio(rows, "log-on", "log-off", 16, "requests_per_s"), 0.95, ">="),
        Target("shadow (SHADOW_SAMPLE=1.0) vs none, /predict at 16 connections",
               "median over rounds of shadow / no-shadow rps",
               _median_ratio(rows, "shadow", "no-shadow", 16, "requests_per_s"), 0.9, ">="),
        Target("shadow vs none, p99 at 1 connection", "median over rounds of shadow / no-shadow p99",
               _median_ratio(rows, "shadow", "no-shadow", 1, "p99_ms"), 1.2, "<="),
    ]


def report(rows: list[Run], found: list[Target]) -> str:
    lines = ["| config | connections | round | requests/s | p50 ms | p99 ms | non-2xx | images | shadow scored | "
             "shadow skipped | log rows written | log rows dropped |", "|" + "---|" * 12]
    for r in rows:
        lines.append(
            f"| {r.config} | {r.connections} | {r.round} | {r.requests_per_s:.1f} | {r.p50_ms or 0:.1f} | "
            f"{r.p99_ms or 0:.1f} | {r.non_2xx} | {r.images_served:.0f} | {r.shadow_scored:.0f} | "
            f"{r.shadow_skipped:.0f} | {r.log_written:.0f} | {r.log_dropped:.0f} |"
        )
    lines += ["", "| target | formula | value | bound | verdict |", "|---|---|---|---|---|"]
    for t in found:
        value = "n/a" if t.value is None else f"{t.value:.3f}"
        lines.append(f"| {t.name} | {t.formula} | {value} | {t.direction} {t.bound} | {t.verdict} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=20, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="turns per comparison (A B, B A, ...)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of load on each server before the runs")
    parser.add_argument("--model", type=Path, default=REPO_ROOT / "models" / "model.onnx")
    parser.add_argument("--out", type=Path, help="also write the rows and targets as JSON here")
    parser.add_argument("--only", choices=("log", "shadow"), help="run one of the two comparisons")
    parser.add_argument("--rows", type=int, help="instead: the log at scale with this many synthetic rows")
    parser.add_argument("--postgres", action="store_true", help="with --rows: also on a real PostgreSQL")
    parser.add_argument("--stores", nargs="+", choices=("sqlite", "postgresql"),
                        help="with --rows: only these stores (default sqlite, and postgresql with --postgres)")
    parser.add_argument("--requests", type=int, default=300, help="with --rows: verdicts posted, one at a time")
    parser.add_argument("--retention-s", type=float, default=120.0, help="with --rows: the retention pass's budget")
    parser.add_argument("--faults", nargs="*", type=float, metavar="OUTAGE_S",
                        help="instead: PostgreSQL stopped this long (default 10 and 300 s) under 4 clients, with "
                             "and without the service SIGKILLed meanwhile")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.rows is not None:
        return _scale(args)
    if args.faults is not None:
        return _faults(args)
    (corpus,) = corpora.load(["elpv"])
    rows: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as folder:
        work = Path(folder)
        if args.only != "shadow":
            rows += compare((("log-off", {"PREDICTION_LOG": "false"}), ("log-on", {})), corpus, (16,), args, work)
        shadow_env = {"ROLLOUT": "shadow", "SHADOW_SAMPLE": "1.0", "MODEL_POLL_INTERVAL_S": POLL_S}
        pair = tuple(
            (name, {**shadow_env, "MODEL_DIR": str(_versions(work / name / "versions", args.model, 1))})
            for name in ("no-shadow", "shadow")
        )
        if args.only != "log":
            rows += compare(pair, corpus, (16, 1), args, work, shadow_in="shadow")  # type: ignore[arg-type]
    found = targets(rows)
    print(report(rows, found))
    if args.out is not None:
        args.out.write_text(json.dumps({"rows": [asdict(r) for r in rows],
                                        "targets": [{**asdict(t), "verdict": t.verdict} for t in found]}, indent=1))
    return 0


def _table(rows: list[object]) -> str:
    fields = list(asdict(rows[0]))  # type: ignore[call-overload]
    lines = ["| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    for row in rows:
        values = asdict(row)  # type: ignore[call-overload]
        lines.append("| " + " | ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in values.values())
                     + " |")
    return "\n".join(lines)


def _scale(args: argparse.Namespace) -> int:
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-quality-scale-") as folder:
        work = Path(folder)
        stores = args.stores or (["sqlite", "postgresql"] if args.postgres else ["sqlite"])
        if "sqlite" in stores:
            results.append(quality_scale.scale("sqlite", None, args.rows, args.model, work, args))
        if "postgresql" in stores:
            with Postgres() as postgres:
                url = quality_faults.fresh_database(postgres, "scale")
                results.append(quality_scale.scale("postgresql", url, args.rows, args.model, work, args))
    found = []
    for r in results:
        found += [
            Target(f"{r.store}, {r.rows} rows: POST /feedback p99", "ms, one verdict a request", r.feedback_p99_ms,
                   20, "<="),
            Target(f"{r.store}, {r.rows} rows: GET /quality p99", "ms", r.quality_p99_ms, 100, "<="),
            Target(f"{r.store}, {r.rows} rows: /predict p99 beside an empty log", "full / empty p99",
                   r.predict_p99_ms / r.predict_empty_p99_ms, 1.2, "<="),
            Target(f"{r.store}: retention of {r.retention_deleted} rows, longest writer gap", "s",
                   r.retention_max_gap_s, 1.0, "<="),
        ]
    print(_table(results))
    print()
    print("\n".join(f"| {t.name} | {t.formula} | {t.value:.3f} | {t.direction} {t.bound} | {t.verdict} |"
                    for t in found))
    if args.out is not None:
        args.out.write_text(json.dumps({"scale": [asdict(r) for r in results],
                                        "targets": [{**asdict(t), "verdict": t.verdict} for t in found]}, indent=1))
    return 0


def _faults(args: argparse.Namespace) -> int:
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-quality-faults-") as folder, Postgres() as postgres:
        for outage_s in args.faults or (10.0, 300.0):
            for kill, drain in ((False, True), (True, True), (True, False)):
                result = quality_faults.outage(
                    postgres, f"outage_{int(outage_s)}_{int(kill)}{int(drain)}", args.model, Path(folder),
                    outage_s=outage_s, clients=4, kill=kill, drain=drain, before_s=5, after_s=10,
                    catch_up_timeout_s=max(120, outage_s),
                )
                log.info("%s", result)
                results.append(result)
    print(_table(results))
    if args.out is not None:
        args.out.write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 0 if all(r.lost == 0 and (r.failed == 0 or r.killed == "loaded") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
