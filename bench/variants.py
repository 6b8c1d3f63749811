"""Engine x precision in one run: model alone, end to end at 1 and 16 connections, held-out accuracy.

    python -m bench.variants                       # ~6 min on 2 cores: every variant the card records
    python -m bench.variants --duration 5 --connections 1,16

For each (engine, precision) variant recorded in the card (and runnable here) it measures, in this one run:
the model alone through the service's own engine (batch 1 p50 and batch 8 images/s), the service under wrk
on the ELPV corpus (ENGINE/PRECISION set explicitly), the held-out accuracy and the largest probability
difference from onnxruntime fp32 (recomputed now, not copied from the card), and the lone-request target:
p99 at 1 connection against 1.3 x (model batch-1 p50 + preprocess_bytes p50). The straightforward
baseline server (bench.baselines.onnx_app, fp32) runs at the same connection counts for the ratio.
Writes bench/results/<date>-<host>-variants.md and .json.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import numpy as np

from bench import corpora, endtoend, load
from bench.cli import LOG_DIR
from bench.machine import describe
from bench.report import RESULTS_DIR
from bench.servers import baseline_spec, service_spec
from bench.timing import repeat
from service.core.config import SessionSettings
from service.core.cpu import available_cpus
from service.core.engines import installed_engines, load_engine
from service.core.engines.base import INPUT_SHAPE
from service.core.model_card import card_path_for, read_model_card
from service.core.preprocessing import preprocess_bytes

log = logging.getLogger("bench")
LONE_FACTOR = 1.3


@dataclass
class VariantRow:
    engine: str
    precision: str
    file: str
    batch1_p50_ms: float
    batch8_images_per_s: float
    accuracy: float | None
    roc_auc: float | None
    max_probability_difference: float | None
    rps: dict[int, float]
    p99_ms: dict[int, float | None]
    lone_target_ms: float | None = None
    error: str | None = None


def model_alone(engine_name: str, precision: str, path: Path, seconds: float) -> tuple[float, float]:
    engine = load_engine(engine_name, path.read_bytes(), path, precision, available_cpus(), SessionSettings())  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    one = rng.uniform(0, 255, (1, *INPUT_SHAPE)).astype(np.float32)
    eight = rng.uniform(0, 255, (8, *INPUT_SHAPE)).astype(np.float32)
    b1 = repeat(lambda _: engine.run(one), seconds, min_calls=10, warmup_calls=3)
    b8 = repeat(lambda _: engine.run(eight), seconds, min_calls=5, warmup_calls=2)
    return b1.percentile_ms(50), b8.calls * 8 / b8.total_s


def held_out(model: Path, engine_name: str, precision: str, path: Path) -> np.ndarray:
    from training.variants import predict_all  # the train extra: ELPV and scikit-learn

    engine = load_engine(engine_name, path.read_bytes(), path, precision, available_cpus(), SessionSettings())  # type: ignore[arg-type]
    return predict_all(engine, _test_set(model).x)


_TEST: dict[Path, object] = {}


def _test_set(model: Path):
    if model not in _TEST:
        from training.data import recorded_split

        _TEST[model] = recorded_split(read_model_card(card_path_for(model))).test
    return _TEST[model]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.variants", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=Path("models/model.onnx"))
    p.add_argument("--duration", type=int, default=8, help="whole seconds per wrk run")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--connections", default="1,16")
    p.add_argument("--model-seconds", type=float, default=2.0, help="per variant and batch size")
    p.add_argument("--elpv-files", type=int, default=64)
    p.add_argument("--no-accuracy", action="store_true", help="skip the held-out pass (no train extra)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, object]:
    connections = tuple(int(c) for c in args.connections.split(","))
    card = read_model_card(card_path_for(args.model))
    machine = describe()
    [elpv] = corpora.load(["elpv"], corpora.DEFAULT_DIR, args.elpv_files)
    payloads = elpv.payloads()
    decode = repeat(lambda i: preprocess_bytes(payloads[i % len(payloads)]), 2.0, min_calls=50)
    preprocess_p50 = decode.percentile_ms(50)
    rows: list[VariantRow] = []
    reference: np.ndarray | None = None
    test_y = None
    for variant in card.variants or []:
        if variant.engine not in installed_engines():
            continue
        path = args.model.parent / variant.file
        log.info("variant %s %s (%s)", variant.engine, variant.precision, path.name)
        b1, b8 = model_alone(variant.engine, variant.precision, path, args.model_seconds)
        row = VariantRow(variant.engine, variant.precision, variant.file, b1, b8, None, None, None, {}, {})
        if not args.no_accuracy:
            from training.evaluate import binary_metrics

            probability = held_out(args.model, variant.engine, variant.precision, path)
            test_y = _test_set(args.model).y  # type: ignore[attr-defined]
            reference = probability if reference is None else reference
            metrics = binary_metrics(test_y, probability, card.threshold)
            row.accuracy, row.roc_auc = metrics["accuracy"], metrics["roc_auc"]
            row.max_probability_difference = float(np.max(np.abs(probability - reference)))
        env = {"ENGINE": variant.engine, "PRECISION": variant.precision}
        spec = service_spec(f"service-{variant.engine}-{variant.precision}", args.model, env)
        server, loads = endtoend.measure_server(spec, [elpv], connections, args.duration, args.warmup, LOG_DIR)
        row.error = server.error
        row.rps = {r.connections: r.requests_per_s for r in loads}
        row.p99_ms = {r.connections: r.p99_ms for r in loads}
        row.lone_target_ms = LONE_FACTOR * (b1 + preprocess_p50)
        rows.append(row)
    base = baseline_spec("baseline-b-onnx", "bench.baselines.onnx_app", {"MODEL_PATH": str(args.model)})
    log.info("baseline: %s", base.name)
    _, baseline = endtoend.measure_server(base, [elpv], connections, args.duration, args.warmup, LOG_DIR)
    return {
        "machine": machine, "model": str(args.model), "preprocess_p50_ms": preprocess_p50,
        "connections": list(connections), "duration_s": args.duration,
        "rows": [asdict(r) for r in rows],
        "baseline": {r.connections: {"rps": r.requests_per_s, "p99_ms": r.p99_ms} for r in baseline},
        "command": "python -m bench.variants " + " ".join(sys.argv[1:]),
    }


def _n(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def render(results: dict) -> str:
    m = results["machine"]
    conns = results["connections"]
    base = results["baseline"]
    lines = [
        f"# Engine x precision, {m['date']} on {m['host']}", "",
        f"- CPU: {m['cpu']}; {m['cores_available']} cores; ISA: {', '.join(m['isa'])}; "
        f"load average at start {m['load_average_1min']}",
        f"- ELPV corpus, wrk {results['duration_s']} s per run; preprocess_bytes p50 "
        f"{results['preprocess_p50_ms']:.2f} ms; `{results['command']}`", "",
        "| engine | precision | model b1 p50 ms | model b8 img/s | "
        + " | ".join(f"rps c={c}" for c in conns)
        + " | p99 c=1 ms | lone target ms | held-out acc | max abs dp | "
        + " | ".join(f"x baseline c={c}" for c in conns) + " |",
        "|" + "---|" * (8 + 2 * len(conns)),
    ]
    for r in results["rows"]:
        ratios = [
            _n(r["rps"].get(c) / base[c]["rps"], 2) if r["rps"].get(c) and base.get(c) else "–" for c in conns
        ]
        lines.append(
            f"| {r['engine']} | {r['precision']} | {_n(r['batch1_p50_ms'], 2)} | {_n(r['batch8_images_per_s'])} | "
            + " | ".join(_n(r["rps"].get(c)) for c in conns)
            + f" | {_n(r['p99_ms'].get(1))} | {_n(r['lone_target_ms'])} | {_n(r['accuracy'], 4)} | "
            f"{_n(r['max_probability_difference'], 4)} | " + " | ".join(ratios) + " |"
        )
    lines.append(
        "| baseline-b-onnx | fp32 | | | " + " | ".join(_n(base.get(c, {}).get("rps")) for c in conns)
        + f" | {_n(base.get(1, {}).get('p99_ms'))} | | | | " + " | ".join("1.00" for _ in conns) + " |"
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s bench: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = parse_args(argv)
    load.wrk_path()
    results = run(args)
    stem = f"{date.today().isoformat()}-{socket.gethostname()}-variants"
    args.out.mkdir(parents=True, exist_ok=True)
    text = render(results)
    (args.out / f"{stem}.md").write_text(text)
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
