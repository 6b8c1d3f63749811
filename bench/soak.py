"""A bounded soak test: `python -m bench.soak --duration 600 --connections 32 --model models/model.onnx`.

Starts `python -m service` on 127.0.0.1, sends a mix of valid and invalid uploads from an asyncio httpx
client for --duration seconds, then stops the server with SIGTERM. Reports requests served, answers by
status code, unexpected answers, p50/p99 latency per time window and the server's RSS at start, after
warm-up and at the end. Exits 1 when any answer is a 5xx or not the one its request should get, when
a request fails at the transport level, when RSS grows by --max-rss-growth or more after warm-up, or
when the server does not exit 0 or logs a traceback. `--model tiny` builds the test suite's tiny ONNX
model (needs the dev extra) so the service itself, not the model, is what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench.servers import Server, service_spec

# Small upload limits for the soak server, so over-limit uploads are cheap to send.
SOAK_ENV = {"MAX_FILE_BYTES": str(1024 * 1024), "MAX_BODY_BYTES": str(4 * 1024 * 1024), "MAX_FILES": "4"}


@dataclass(frozen=True)
class Kind:
    """One kind of request, how often it is sent and the statuses it may get."""

    name: str
    weight: int
    expected: frozenset[int]
    build: Callable[[random.Random], dict[str, object]]


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def make_images(count: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """Distinct photos-ish images (noise over a gradient, various sizes), half PNG, half JPEG."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(count):
        side = int(rng.integers(120, 640))
        base = np.linspace(0, 255, side, dtype=np.float32)[None, :] * rng.uniform(0.2, 1.0)
        noise = rng.normal(0, 25, (side, side))
        pixels = np.clip(base + noise + rng.uniform(-60, 60), 0, 255).astype(np.uint8)
        fmt = "PNG" if i % 2 else "JPEG"
        images.append((f"cell-{i}.{fmt.lower()}", _encode(Image.fromarray(pixels, "L"), fmt)))
    return images


def request_kinds(images: list[tuple[str, bytes]]) -> list[Kind]:
    over_limit = b"\x00" * (int(SOAK_ENV["MAX_FILE_BYTES"]) + 1)
    ppm = _encode(Image.new("L", (8, 8), 128), "PPM")

    def one(rng: random.Random) -> dict[str, object]:
        name, data = rng.choice(images)
        return {"files": {"file": (name, data, "image/png")}}

    def several(rng: random.Random) -> dict[str, object]:
        return {"files": [("files", (n, d, "application/octet-stream")) for n, d in rng.sample(images, 3)]}

    def raw(rng: random.Random) -> dict[str, object]:
        return {"content": rng.choice(images)[1], "headers": {"Content-Type": "image/png"}}

    def truncated(rng: random.Random) -> dict[str, object]:
        name, data = rng.choice(images)
        return {"files": {"file": (name, data[: len(data) // 3], "image/png")}}

    def garbage(rng: random.Random) -> dict[str, object]:
        return {"files": {"file": ("noise.png", rng.randbytes(rng.randint(0, 4096)), "image/png")}}

    def wrong_content_type(rng: random.Random) -> dict[str, object]:
        return {"content": b"{}", "headers": {"Content-Type": "application/json"}}

    def unsupported_format(rng: random.Random) -> dict[str, object]:
        return {"files": {"file": ("a.ppm", ppm, "image/x-ppm")}}

    def too_many_files(rng: random.Random) -> dict[str, object]:
        return {"files": [("files", (n, d, "image/png")) for n, d in rng.sample(images, 5)]}

    def no_file_field(rng: random.Random) -> dict[str, object]:
        return {"files": {"picture": ("a.png", images[0][1], "image/png")}}

    def over_limit_body(rng: random.Random) -> dict[str, object]:
        return {"content": over_limit, "headers": {"Content-Type": "image/png"}}

    return [
        Kind("one-image", 50, frozenset({200}), one),
        Kind("three-images", 10, frozenset({200}), several),
        Kind("raw-body", 10, frozenset({200}), raw),
        Kind("truncated", 6, frozenset({400}), truncated),
        Kind("garbage", 6, frozenset({400}), garbage),
        Kind("wrong-content-type", 4, frozenset({415}), wrong_content_type),
        Kind("unsupported-format", 4, frozenset({415}), unsupported_format),
        Kind("too-many-files", 4, frozenset({422}), too_many_files),
        Kind("no-file-field", 3, frozenset({422}), no_file_field),
        Kind("over-limit", 3, frozenset({413}), over_limit_body),
    ]


@dataclass
class Window:
    start_s: float
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)

    def summary(self) -> dict[str, object]:
        lat = np.array(self.latencies) * 1000 if self.latencies else np.zeros(1)
        return {
            "start_s": round(self.start_s, 1),
            "requests": len(self.latencies),
            "p50_ms": round(float(np.percentile(lat, 50)), 1),
            "p99_ms": round(float(np.percentile(lat, 99)), 1),
            "statuses": dict(sorted(self.statuses.items())),
        }


@dataclass
class Report:
    duration_s: float
    connections: int
    model: str
    requests: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)
    retried: int = 0
    windows: list[dict[str, object]] = field(default_factory=list)
    rss_kib: dict[str, int] = field(default_factory=dict)
    rss_growth_after_warmup: float = 0.0
    server_exit_code: int | None = None
    tracebacks_in_log: int = 0
    failures: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        data = asdict(self)
        data["statuses"] = dict(sorted(self.statuses.items()))
        data["unexpected"] = dict(sorted(self.unexpected.items()))
        return json.dumps(data, indent=2)


async def load(base_url: str, args: argparse.Namespace, report: Report, on_warm: Callable[[], None]) -> None:
    kinds = request_kinds(make_images(48))
    weights = [k.weight for k in kinds]
    started = time.monotonic()
    stop_at = started + args.duration
    warm_at = started + args.warmup
    windows: list[Window] = [Window(0.0)]
    warmed = False

    async def worker(seed: int, client: httpx.AsyncClient) -> None:
        nonlocal warmed
        rng = random.Random(seed)
        first = True
        while (now := time.monotonic()) < stop_at:
            if not warmed and now >= warm_at:
                warmed = True
                on_warm()
            if now - started >= windows[-1].start_s + args.window:
                windows.append(Window(windows[-1].start_s + args.window))
            window = windows[-1]
            # Each worker starts with a different kind, so every kind is sent even in a short run.
            kind = kinds[seed % len(kinds)] if first else rng.choices(kinds, weights)[0]
            first = False
            t0 = time.perf_counter()
            request = kind.build(rng)
            try:
                try:
                    response = await client.post("/predict", **request)  # type: ignore[arg-type]
                except (httpx.ReadError, httpx.RemoteProtocolError):
                    # A pooled connection closed by the server just as it was reused, before any answer:
                    # retried once, as browsers and urllib3 do, and counted. A server that is really gone
                    # fails the retry too.
                    report.retried += 1
                    response = await client.post("/predict", **request)  # type: ignore[arg-type]
                code = str(response.status_code)
                ok = response.status_code in kind.expected
                if ok and response.status_code == 200:
                    probabilities = [p["probability"] for p in response.json()["predictions"]]
                    ok = all(0.0 <= p <= 1.0 for p in probabilities)
            except httpx.HTTPError as exc:
                code, ok = f"transport:{type(exc).__name__}", False
            window.latencies.append(time.perf_counter() - t0)
            window.statuses[code] += 1
            report.statuses[code] += 1
            report.requests += 1
            if not ok:
                report.unexpected[f"{kind.name}->{code}"] += 1

    # Idle connections are dropped by the client before uvicorn's 5 s keep-alive timeout closes them,
    # or a request sent just as the server closes one fails with ReadError (a client-side race).
    limits = httpx.Limits(
        max_connections=args.connections, max_keepalive_connections=args.connections, keepalive_expiry=2.0
    )
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:
        await asyncio.gather(*(worker(args.seed + i, client) for i in range(args.connections)))
    report.windows = [w.summary() for w in windows if w.latencies]


def run(args: argparse.Namespace) -> Report:
    log_dir = args.log.parent if args.log else Path(tempfile.mkdtemp(prefix="soak-"))
    name = args.log.stem if args.log else "server"
    extra_env = dict(item.split("=", 1) for item in args.env)
    report = Report(args.duration, args.connections, str(args.model))
    server = Server(service_spec(name, args.model, {"LOG_LEVEL": "info", **SOAK_ENV, **extra_env}), log_dir, 120.0)
    log_path = server.log_path
    with server:
        report.rss_kib["start"] = server.rss_kib()

        def on_warm() -> None:
            report.rss_kib["after_warmup"] = server.rss_kib()

        asyncio.run(load(server.url, args, report, on_warm))
        report.rss_kib["end"] = server.rss_kib()
        report.server_exit_code = server.terminate(timeout_s=60)
    log = log_path.read_text(errors="replace")
    report.tracebacks_in_log = log.count("Traceback")
    warm = report.rss_kib.get("after_warmup", report.rss_kib["start"])
    report.rss_growth_after_warmup = round((report.rss_kib["end"] - warm) / warm, 4)
    failures = report.failures
    if report.unexpected:
        failures.append(f"unexpected answers: {dict(report.unexpected)}")
    if any(code.startswith("5") for code in report.statuses):
        failures.append("5xx answers")
    if report.rss_growth_after_warmup >= args.max_rss_growth:
        failures.append(f"RSS grew {report.rss_growth_after_warmup:.1%} after warm-up")
    if report.server_exit_code != 0:
        failures.append(f"the server exited with {report.server_exit_code}")
    if report.tracebacks_in_log:
        failures.append(f"{report.tracebacks_in_log} tracebacks in the server log {log_path}")
    return report


def print_report(report: Report) -> None:
    print(f"soak: {report.duration_s:g} s, {report.connections} connections, model {report.model}")
    print(f"{'window':>8} {'requests':>9} {'p50 ms':>8} {'p99 ms':>8}  statuses")
    for w in report.windows:
        print(f"{w['start_s']:>7}s {w['requests']:>9} {w['p50_ms']:>8} {w['p99_ms']:>8}  {w['statuses']}")
    print(f"requests: {report.requests}  statuses: {dict(sorted(report.statuses.items()))}")
    print(f"unexpected: {dict(report.unexpected) or 'none'}")
    print(f"retried after a keep-alive connection closed under them: {report.retried}")
    rss = report.rss_kib
    print(
        f"RSS MiB: start {rss.get('start', 0) / 1024:.1f}, after warm-up {rss.get('after_warmup', 0) / 1024:.1f}, "
        f"end {rss.get('end', 0) / 1024:.1f} (growth after warm-up {report.rss_growth_after_warmup:+.1%})"
    )
    print(f"server exit code {report.server_exit_code}, tracebacks in log {report.tracebacks_in_log}")
    print("PASS" if not report.failures else "FAIL: " + "; ".join(report.failures))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent clients (default 16)")
    parser.add_argument("--model", type=Path, default=Path("models/model.onnx"), help="ONNX model path")
    parser.add_argument("--window", type=float, default=10.0, help="seconds per latency window (default 10)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds before the warm RSS (default 20%%)")
    parser.add_argument("--max-rss-growth", type=float, default=0.10, help="fail at this growth after warm-up")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra server setting")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--log", type=Path, help="where the server's log goes (default a temporary file)")
    args = parser.parse_args(argv)
    if args.warmup is None:
        args.warmup = 0.2 * args.duration
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    print_report(report)
    if args.json:
        args.json.write_text(report.to_json())
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
