"""What one explanation costs, and what explanations beside /predict traffic do to it.

In process, on the shipped model, through the same Pipeline the HTTP routes use (decode pool, micro-batcher,
one onnxruntime session); the HTTP edge (multipart parsing, JSON) is left out, the same for both kinds.

    python -m bench.explain [--model models/model.onnx] [--seconds 20] [--clients 4] [--explainers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from service.core.config import Settings
from service.core.explain import OcclusionGrid, explain
from service.core.metrics import Metrics
from service.core.pipeline import EncodedImage, Pipeline


def cell_image(seed: int) -> bytes:
    """A synthetic 300x300 cell: bright grain, two busbars, a dark crack (the shape of the ELPV images)."""
    rng = np.random.default_rng(seed)
    cell = rng.normal(190, 12, (300, 300)).clip(0, 255).astype(np.uint8)
    cell[:, 95:100] = cell[:, 195:200] = 120
    image = Image.fromarray(cell, "L")
    ImageDraw.Draw(image).line([(20, 200 - seed % 50), (140, 270)], fill=25, width=9)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@dataclass
class Load:
    latencies: list[float]
    explanations: list[float]
    seconds: float

    def line(self, name: str) -> str:
        ms = sorted(1000 * x for x in self.latencies)
        rate = len(ms) / self.seconds
        p95 = ms[int(0.95 * (len(ms) - 1))] if ms else float("nan")
        text = f"{name}: /predict {rate:.1f} images/s, p50 {statistics.median(ms):.0f} ms, p95 {p95:.0f} ms"
        if self.explanations:
            median_ms = 1000 * statistics.median(self.explanations)
            text += f"; {len(self.explanations)} explanations, median {median_ms:.0f} ms"
        return text


async def predict_loop(pipeline: Pipeline, images: list[EncodedImage], stop: float, out: list[float]) -> None:
    loop = asyncio.get_running_loop()
    i = 0
    while loop.time() < stop:
        start = time.perf_counter()
        await pipeline.answer([images[i % len(images)]], pipeline.deadline())
        out.append(time.perf_counter() - start)
        i += 1


async def explain_loop(pipeline: Pipeline, image: np.ndarray, stop: float, out: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while loop.time() < stop:
        start = time.perf_counter()
        await explain(pipeline, image, OcclusionGrid(), pipeline.deadline())
        out.append(time.perf_counter() - start)


async def run(args: argparse.Namespace) -> None:
    settings = Settings(model_path=args.model, request_timeout_s=300, explain_chunk_images=args.chunk)
    pipeline = Pipeline.load(settings, Metrics())
    pipeline.warm_up()
    await pipeline.start()
    images = [EncodedImage(f"cell{i}.png", cell_image(i)) for i in range(8)]
    (array,) = await pipeline.decode(images[:1], pipeline.deadline())
    try:
        # One request at a time: the unit the explanation is counted in.
        single: list[float] = []
        await predict_loop(pipeline, images, asyncio.get_running_loop().time() + args.seconds / 2, single)
        alone: list[float] = []
        for _ in range(args.explanations):
            start = time.perf_counter()
            await explain(pipeline, array, OcclusionGrid(), pipeline.deadline())
            alone.append(time.perf_counter() - start)
        one_ms = 1000 * statistics.median(single)
        explain_ms = 1000 * statistics.median(alone)
        grid = OcclusionGrid()
        print(f"EXPLAIN_CHUNK_IMAGES={settings.explain_chunk_images}, MAX_BATCH_SIZE={settings.max_batch_size}")
        print(f"one /predict request alone: median {one_ms:.0f} ms over {len(single)} requests")
        print(
            f"one explanation alone (patch {grid.patch}, stride {grid.stride}, {grid.positions} copies + 1): "
            f"median {explain_ms:.0f} ms over {len(alone)} = {explain_ms / one_ms:.1f} /predict requests"
        )
        for explainers in (0, args.explainers):
            latencies: list[float] = []
            explanations: list[float] = []
            stop = asyncio.get_running_loop().time() + args.seconds
            tasks = [predict_loop(pipeline, images, stop, latencies) for _ in range(args.clients)]
            tasks += [explain_loop(pipeline, array, stop, explanations) for _ in range(explainers)]
            await asyncio.gather(*tasks)
            label = f"{args.clients} /predict clients" + (f" + {explainers} explaining" if explainers else " alone")
            print(Load(latencies, explanations, args.seconds).line(label))
    finally:
        await pipeline.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/model.onnx"))
    parser.add_argument("--seconds", type=float, default=20.0, help="per load phase")
    parser.add_argument("--clients", type=int, default=4, help="concurrent /predict callers")
    parser.add_argument("--explainers", type=int, default=1, help="concurrent explanation callers beside them")
    parser.add_argument("--chunk", type=int, default=Settings().explain_chunk_images, help="EXPLAIN_CHUNK_IMAGES")
    parser.add_argument("--explanations", type=int, default=5, help="explanations timed alone")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
