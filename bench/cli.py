"""`python -m bench`: ceiling, preprocessing, end to end against three baselines, CPU per request, fairness,
training; one table."""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
import tempfile
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from bench import alternated, ceiling, corpora, cpu, endtoend, fairness, load, preprocessing, targets, training_speed
from bench.machine import describe
from bench.report import RESULTS_DIR, Results, render, write
from bench.servers import ServerError, ServerSpec, baseline_spec, service_spec

log = logging.getLogger("bench")
PARTS = ("ceiling", "preprocess", "e2e", "fairness", "alternated")
SERVERS = (targets.SERVICE, targets.SERVICE_FP32, targets.SERVICE_INT8, targets.BASELINE_OPENVINO,
           targets.BASELINE_ONNX, targets.BASELINE_KERAS, targets.SERVICE_LOG_OFF, targets.SERVICE_GRANIAN)
# The servers the alternated part compares: the service as installed, with the prediction
# log off, on Granian, and the 25-line server (c), the reference of its ratios.
ALTERNATED_SERVERS = (targets.SERVICE, targets.SERVICE_LOG_OFF, targets.SERVICE_GRANIAN, targets.BASELINE_OPENVINO)
LOG_DIR = Path(tempfile.gettempdir()) / "cell-classifier-bench" / "logs"
# (full, --quick) defaults for the options left unset.
DEFAULTS: dict[str, tuple[Any, Any]] = {
    "duration": (20, 2),
    "warmup": (3, 1),
    "connections": ((1, 4, 16), (1, 16)),
    "ceiling_seconds": (5.0, 0.5),
    "preprocess_seconds": (3.0, 0.5),
    "elpv_files": (64, 16),
    "training_images": (320, 64),
    "fairness_duration": (20, 3),
    "rounds": (3, 1),
}


def _names(allowed: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(name.strip() for name in text.split(",") if name.strip())
        unknown = sorted(set(names) - set(allowed))
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)} (got {text!r})")
        return names

    return parse


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"comma-separated connection counts, not {text!r}") from exc
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("connection counts must be positive")
    return counts


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"KEY=VALUE, not {text!r}")
    return key.strip().upper(), value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmarks the service against its ceiling and three baselines; prints a Markdown table and "
        "writes it with a JSON of raw figures to bench/results/<date>-<host>.md/.json.",
    )
    what = p.add_argument_group("what to run")
    what.add_argument("--quick", action="store_true",
                      help="smoke run: 2 s per wrk run, 1 and 16 connections, short loops; writes *-quick.md")
    what.add_argument("--parts", type=_names(PARTS), default=PARTS,
                      help=f"comma list of {', '.join(PARTS)} (default: all)")
    what.add_argument("--training", action="store_true",
                      help="also measure training images/s (float32 and mixed_bfloat16; needs TensorFlow)")
    what.add_argument("--servers", type=_names(SERVERS), default=SERVERS[:6],
                      help=f"comma list of {', '.join(SERVERS)} for the e2e part (default: the first six)")
    what.add_argument("--alternated-servers", type=_names(SERVERS), default=ALTERNATED_SERVERS,
                      help=f"the alternated part's servers (default: {', '.join(ALTERNATED_SERVERS)})")
    what.add_argument("--multipart", action="store_true",
                      help="the alternated part posts every image as a multipart `file` field (the README's curl), "
                           "against baseline (c)'s UploadFile twin, instead of raw bodies")
    what.add_argument("--corpora", type=_names(corpora.CORPUS_NAMES), default=corpora.CORPUS_NAMES,
                      help=f"comma list of {', '.join(corpora.CORPUS_NAMES)} (default: all)")
    models = p.add_argument_group("models")
    models.add_argument("--model", type=Path, default=Path("models/model.onnx"),
                        help="the fp32 ONNX model, its .json beside it (default: models/model.onnx)")
    models.add_argument("--int8-model", type=Path,
                        help="default: model.int8.onnx beside --model, when it exists")
    models.add_argument("--keras-weights", type=Path,
                        help="a .weights.h5 or .keras for baseline (a); default the untrained seed CNN (same speed)")
    models.add_argument("--service-env", type=_env_pair, action="append", default=[], metavar="KEY=VALUE",
                        help="extra service setting for both service runs, e.g. MAX_BATCH_SIZE=16 (repeatable)")
    timing = p.add_argument_group("durations (defaults: full run / --quick)")
    timing.add_argument("--duration", type=int, help="whole seconds per wrk run (20 / 2)")
    timing.add_argument("--warmup", type=int,
                        help="whole seconds of wrk warm-up per server and corpus, 0 for none (3 / 1)")
    timing.add_argument("--connections", type=_counts, help="comma list (1,4,16 / 1,16)")
    timing.add_argument("--ceiling-seconds", type=float, help="seconds per model and batch size (5 / 0.5)")
    timing.add_argument("--preprocess-seconds", type=float, help="seconds per corpus and decoder (3 / 0.5)")
    timing.add_argument("--elpv-files", type=int, help="ELPV cells in the corpus (64 / 16)")
    timing.add_argument("--training-images", type=int, help="images in the timed training epoch (320 / 64)")
    timing.add_argument("--rounds", type=int, help="alternated rounds per corpus, 16 connections (3 / 1)")
    timing.add_argument("--fairness-duration", type=int,
                        help="whole seconds of small requests alone, then beside the large uploads (20 / 3)")
    out = p.add_argument_group("output")
    out.add_argument("--out", type=Path, default=RESULTS_DIR,
                     help="folder for <date>-<host>.md and .json (default: bench/results)")
    out.add_argument("--corpus-dir", type=Path, default=corpora.DEFAULT_DIR,
                     help=f"where the generated corpora are kept between runs (default: {corpora.DEFAULT_DIR})")
    args = p.parse_args(argv)
    for name, (full, quick) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.duration < 1 or args.warmup < 0 or args.fairness_duration < 1 or args.rounds < 1:
        p.error("--duration and --fairness-duration must be at least 1 s and --warmup not negative")
    if args.int8_model is None:
        beside = args.model.with_name("model.int8.onnx")
        args.int8_model = beside if beside.exists() and beside != args.model else None
    return args


def _model_card(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.with_suffix(".json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _specs(args: argparse.Namespace, names: tuple[str, ...] | None = None, *, form: bool = False) -> list[ServerSpec]:
    """`form`: baseline (c) as its multipart twin (the alternated part's --multipart)."""
    env = dict(args.service_env)
    openvino_app = "bench.baselines.openvino_form_app" if form else "bench.baselines.openvino_app"
    specs = {
        targets.SERVICE: service_spec(targets.SERVICE, args.model, env),
        targets.SERVICE_FP32: service_spec(targets.SERVICE_FP32, args.model, {**env, "PRECISION": "fp32"}),
        targets.SERVICE_LOG_OFF: service_spec(targets.SERVICE_LOG_OFF, args.model, {**env, "PREDICTION_LOG": "false"}),
        targets.SERVICE_GRANIAN: service_spec(targets.SERVICE_GRANIAN, args.model, {**env, "HTTP_SERVER": "granian"}),
        # The file the service serves with these settings on this CPU: both servers run one file.
        targets.BASELINE_OPENVINO: baseline_spec(targets.BASELINE_OPENVINO, openvino_app,
                                                 {"MODEL_PATH": str(ceiling.served_file(args.model, env))}),
        targets.BASELINE_ONNX: baseline_spec(targets.BASELINE_ONNX, "bench.baselines.onnx_app",
                                             {"MODEL_PATH": str(args.model)}),
        targets.BASELINE_KERAS: baseline_spec(targets.BASELINE_KERAS, "bench.baselines.keras_app",
                                              {"KERAS_WEIGHTS": str(args.keras_weights or "")}),
    }
    if args.int8_model is not None:
        specs[targets.SERVICE_INT8] = service_spec(targets.SERVICE_INT8, args.int8_model, env)
    return [specs[name] for name in (names or args.servers) if name in specs]


def _estimate_s(args: argparse.Namespace, servers: int) -> float:
    e2e = servers * len(args.corpora) * (len(args.connections) * args.duration + args.warmup + 3) + servers * 10
    models = (2 if args.int8_model else 1) + 1  # + the served variant and fp32 on its engine
    seconds = models * 3 * args.ceiling_seconds + len(args.corpora) * 2 * args.preprocess_seconds
    fair = 2 * args.fairness_duration + 30 if "fairness" in args.parts else 0
    runs = len(args.alternated_servers) * len(args.corpora) * (args.rounds * (args.duration + 2) + args.warmup + 3)
    alternating = runs + 10 * len(args.alternated_servers) if "alternated" in args.parts else 0
    return seconds + (e2e if "e2e" in args.parts else 0) + fair + alternating + (120 if args.training else 0)


def _log_row(row: endtoend.LoadRow) -> None:
    p99 = "–" if row.p99_ms is None else f"{row.p99_ms:.1f}"
    log.info("  %s c=%d: %.1f req/s, p99 %s ms, %d non-2xx, %d socket errors",
             row.corpus, row.connections, row.requests_per_s, p99, row.non_2xx, row.socket_errors)


def run(args: argparse.Namespace) -> Results:
    card = _model_card(args.model)
    settings = {
        "quick": args.quick, "model": str(args.model), "model_name": card.get("name", "?"),
        "model_sha256": str(card.get("sha256", "?"))[:12],
        "int8_model": str(args.int8_model) if args.int8_model else None,
        "int8_model_sha256": str(_model_card(args.int8_model).get("sha256", "?"))[:12] if args.int8_model else None,
        "keras_weights": str(args.keras_weights) if args.keras_weights else None,
        "duration_s": args.duration, "warmup_s": args.warmup, "connections": list(args.connections),
        "ceiling_seconds": args.ceiling_seconds, "preprocess_seconds": args.preprocess_seconds,
        "fairness_duration_s": args.fairness_duration,
        "service_env": dict(args.service_env), "command": "python -m bench " + " ".join(sys.argv[1:]),
    }
    results = Results(describe(), settings)
    log.info("corpora: generating or reusing %s in %s", ", ".join(args.corpora), args.corpus_dir)
    chosen = corpora.load(args.corpora, args.corpus_dir, args.elpv_files)
    if "ceiling" in args.parts:
        for label, path in (("fp32", args.model), ("int8", args.int8_model)):
            if path is not None:
                log.info("ceiling: %s %s", label, path)
                results.ceiling += ceiling.measure(label, path, args.ceiling_seconds)
        log.info("ceiling: the variant the service serves, and fp32 on its engine")
        results.ceiling += ceiling.measure_served(args.model, dict(args.service_env), args.ceiling_seconds)
    if "preprocess" in args.parts:
        for corpus in chosen:
            log.info("preprocessing: %s", corpus.name)
            results.preprocessing.append(preprocessing.measure(corpus, args.preprocess_seconds))
    if "e2e" in args.parts:
        for spec in _specs(args):
            log.info("end to end: %s (log %s)", spec.name, LOG_DIR / f"{spec.name}.log")
            server, rows = endtoend.measure_server(
                spec, chosen, args.connections, args.duration, args.warmup, LOG_DIR,
                on_row=_log_row,
            )
            results.endtoend.servers.append(server)
            results.endtoend.rows += rows
    results.cpu = cpu.breakdown(results.endtoend.rows, results.ceiling, results.preprocessing)
    if "fairness" in args.parts:
        small = next((c for c in chosen if c.name == "elpv"), None)
        small = small or corpora.load(("elpv",), args.corpus_dir, args.elpv_files)[0]
        spec = service_spec(targets.SERVICE, args.model, dict(args.service_env))
        log.info("fairness: %d s of ELPV alone, then beside %d clients of %d x 64 MP PNGs (log %s)",
                 args.fairness_duration, fairness.LARGE_CLIENTS, fairness.LARGE_FILES,
                 LOG_DIR / f"{spec.name}.log")  # fmt: skip
        try:
            results.fairness = fairness.measure(spec, small, args.corpus_dir, args.fairness_duration, LOG_DIR)
        except (ServerError, load.LoadError) as exc:
            log.error("fairness: %s", exc)
            results.fairness_error = str(exc).strip().splitlines()[0]
    if "alternated" in args.parts:
        log.info("alternated: %s, %d rounds per corpus", ", ".join(args.alternated_servers), args.rounds)
        results.alternated = alternated.measure(
            _specs(args, args.alternated_servers, form=args.multipart), chosen, 16, args.duration, args.warmup,
            args.rounds, LOG_DIR, reference=targets.BASELINE_OPENVINO, form=args.multipart,
        )
    if args.training:
        for precision in training_speed.PRECISIONS:
            log.info("training: %s, %d images", precision, args.training_images)
            results.training.append(training_speed.measure(precision, args.training_images, 32))
    results.targets = targets.evaluate(results.ceiling, results.preprocessing, results.endtoend.rows, args.corpora,
                                       results.cpu, results.fairness)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s bench: %(message)s", datefmt="%H:%M:%S")
    # One line per request of the answer checks is noise.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if not args.model.exists():
        log.error("model %s does not exist: train first (make train) or pass --model", args.model)
        return 2
    if "e2e" in args.parts:
        try:
            load.wrk_path()
        except load.LoadError as exc:
            log.error("%s", exc)
            return 2
    if targets.SERVICE_INT8 in args.servers and args.int8_model is None:
        log.warning("no model.int8.onnx beside %s and no --int8-model: INT8 rows are skipped", args.model)
    log.info("estimated time: %.0f min", _estimate_s(args, len(_specs(args))) / 60)
    results = run(args)
    stem = f"{date.today().isoformat()}-{socket.gethostname()}" + ("-quick" if args.quick else "")
    markdown, raw = write(results, args.out, stem)
    sys.stdout.write(render(results) + "\n")
    log.info("wrote %s and %s", markdown, raw)
    return 1 if any(server.error for server in results.endtoend.servers) or results.fairness_error else 0
