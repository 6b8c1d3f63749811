"""The Ray Serve deployment against the single-process service, in one run on one machine.

    ray start --head --num-cpus 2 --include-dashboard=false --node-ip-address 127.0.0.1
    serve run --non-blocking deploy/ray/serve-config.yaml
    python -m bench.ray_serve --ray-url http://127.0.0.1:8000

The single-process service (`python -m service`, same model) is started here on a free port. Each
target gets `--duration` seconds of closed-loop load (each client posts the next image as soon as the
last is answered) per concurrency; the table gives requests/s and latency percentiles of 200s.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench.servers import Server, service_spec


@dataclass(frozen=True)
class Result:
    target: str
    clients: int
    seconds: float
    ok: int
    errors: dict[int, int]
    latencies_s: list[float]

    @property
    def per_s(self) -> float:
        return self.ok / self.seconds

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1000) if self.latencies_s else float("nan")


def cell_png(seed: int = 0) -> bytes:
    """A 300 x 300 grey PNG with noise: the size and format of an ELPV cell, without the data set."""
    rng = np.random.default_rng(seed)
    gradient = np.asarray(Image.linear_gradient("L").resize((300, 300)), dtype=np.int16)
    noisy = np.clip(gradient + rng.normal(0, 12, gradient.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, "PNG")
    return buffer.getvalue()


async def closed_loop(target: str, url: str, body: bytes, clients: int, duration_s: float) -> Result:
    latencies: list[float] = []
    errors: dict[int, int] = {}
    stop_at = time.perf_counter() + duration_s

    async def client(http: httpx.AsyncClient) -> None:
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            response = await http.post("/predict", content=body, headers={"Content-Type": "image/png"})
            if response.status_code == 200:
                latencies.append(time.perf_counter() - start)
            else:
                errors[response.status_code] = errors.get(response.status_code, 0) + 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        await http.post("/predict", content=body, headers={"Content-Type": "image/png"})  # connections, caches
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        seconds = time.perf_counter() - start
    return Result(target, clients, seconds, len(latencies), errors, latencies)


def table(results: list[Result]) -> str:
    lines = [
        "| target | clients | requests/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.target} | {r.clients} | {r.per_s:.1f} | {r.percentile_ms(50):.1f} | "
            f"{r.percentile_ms(99):.1f} | {r.errors or '-'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ray-url", required=True, help="the running Ray Serve application")
    parser.add_argument("--model", type=Path, default=Path("models/model.onnx"))
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per target and concurrency")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args(argv)
    body = cell_png()
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as logs, Server(service_spec("single", args.model, {}), Path(logs)) as single:
        for clients in args.clients:
            # Interleaved, so slow drifts of a shared machine touch both targets alike.
            for target, url in (("single process", single.url), ("ray serve", args.ray_url)):
                results.append(asyncio.run(closed_loop(target, url, body, clients, args.duration)))
                print(table(results[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
