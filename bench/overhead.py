"""What the service adds to one lone request, with the model taken out of the picture.

    python -m bench.overhead --requests 600

Serves a negligible model (a mean and a sigmoid: microseconds; bench.negligible_model) in process through
httpx's ASGI transport, one request at a time, posting one ELPV cell; so the latency is preprocess_bytes
plus everything around it (routing, dependencies, the decode pool, the batcher, encoding). Run it against two
trees (PYTHONPATH) to compare them; BENCHMARKS.md has the figures that motivated the lone-request path and
the async dependencies.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from bench import corpora
from bench.negligible_model import write_negligible_model
from service.core.config import Settings
from service.edge.app import create_app


async def measure(model: Path, data: bytes, requests: int, warmup: int) -> np.ndarray:
    app = create_app(Settings(model_path=model, engine="onnxruntime"))
    async with app.router.lifespan_context(app) as state:

        async def with_state(scope: dict, receive: object, send: object) -> None:
            scope["state"] = dict(state)  # what uvicorn hands each request from the lifespan
            await app(scope, receive, send)  # type: ignore[arg-type]

        transport = httpx.ASGITransport(app=with_state)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            seconds = []
            for _ in range(warmup + requests):
                start = time.perf_counter()
                response = await client.post("/predict", content=data, headers={"content-type": "image/png"})
                seconds.append(time.perf_counter() - start)
                response.raise_for_status()
    return np.asarray(seconds[warmup:]) * 1000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--warmup", type=int, default=100)
    args = p.parse_args(argv)
    [elpv] = corpora.load(["elpv"], corpora.DEFAULT_DIR, 16)
    with tempfile.TemporaryDirectory() as tmp:
        model = write_negligible_model(Path(tmp) / "model.onnx")
        ms = asyncio.run(measure(model, elpv.payloads()[0], args.requests, args.warmup))
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    print(f"lone request, negligible model: p50 {p50:.2f}  p90 {p90:.2f}  p99 {p99:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
