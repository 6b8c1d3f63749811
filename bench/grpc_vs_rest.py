"""The Open Inference Protocol over gRPC against the same over REST, one server, one run:

    python -m bench.grpc_vs_rest                       # ELPV cells, 1 and 16 connections, 10 s each
    python -m bench.grpc_vs_rest --duration 5 --connections 1,4,16

One `python -m service` (the shipped model) serves both doors; each door gets `--duration` seconds of
closed-loop load per connection count (each connection sends its next cell as soon as the last is answered),
the doors alternating so drift on a shared machine hits both. REST is `POST /v2/models/{name}/infer` with
binary tensor data (the file as it is, what tritonclient.http sends); gRPC is `ModelInfer` with the file in
`raw_input_contents` (what tritonclient.grpc sends); both ask for the probability only, raw.

The clients are a Python pool in this process (no gRPC load generator is packaged here): one asyncio task per
connection, each on its own connection (an httpx client with one connection; a gRPC channel with its own
subchannel pool). Requests are built once, so a request costs the client its transport only; the client's CPU
per request is measured and printed (on a small machine it competes with the server for the same cores), as is
the server's (its process tree). Before the load, every cell is sent once through both doors and the answers
compared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import grpc
import httpx
import numpy as np

from bench.corpora import elpv_cells
from bench.machine import describe
from bench.report import RESULTS_DIR
from bench.servers import Server, process_tree_cpu_s, service_spec
from service.edge.grpc import grpc_predict_v2_pb2 as pb

log = logging.getLogger("bench")
HEADER_LENGTH = "Inference-Header-Content-Length"
INFER = "/inference.GRPCInferenceService/ModelInfer"
Send = Callable[[int], Awaitable[float]]  # request index -> the probability answered


@dataclass
class Row:
    door: str
    connections: int
    seconds: float
    ok: int
    errors: int
    p50_ms: float
    p99_ms: float
    server_core_ms: float  # server CPU (process tree) per answered request
    client_core_ms: float  # this process's CPU per answered request

    @property
    def per_s(self) -> float:
        return self.ok / self.seconds


def rest_request(model: str, data: bytes) -> tuple[bytes, dict[str, str]]:
    """The /v2 binary request tritonclient.http sends for one encoded file: JSON header, then the tensor."""
    tensor = len(data).to_bytes(4, "little") + data
    header = json.dumps({
        "inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [1],
                    "parameters": {"binary_data_size": len(tensor)}}],
        "outputs": [{"name": "probability", "parameters": {"binary_data": True}}],
    }).encode()
    return header + tensor, {HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream"}


def grpc_request(model: str, data: bytes) -> bytes:
    """The ModelInferRequest tritonclient.grpc sends for one encoded file, serialized."""
    request = pb.ModelInferRequest(model_name=model, raw_input_contents=[len(data).to_bytes(4, "little") + data])
    request.inputs.add(name="image_bytes", datatype="BYTES", shape=[1])
    request.outputs.add(name="probability")
    return request.SerializeToString()


def rest_probability(response: httpx.Response) -> float:
    response.raise_for_status()
    start = int(response.headers[HEADER_LENGTH])
    return float(np.frombuffer(response.content[start:start + 4], "<f4")[0])


def grpc_probability(answer: bytes) -> float:
    return float(np.frombuffer(pb.ModelInferResponse.FromString(answer).raw_output_contents[0], "<f4")[0])


class Doors:
    """Senders for both doors, each over its own connections."""

    def __init__(self, server: Server, model: str, files: list[bytes], connections: int) -> None:
        self.rest = [rest_request(model, data) for data in files]
        self.grpc = [grpc_request(model, data) for data in files]
        self.url = f"{server.base_url}/v2/models/{model}/infer"
        self.http = [httpx.AsyncClient(limits=httpx.Limits(max_connections=1), timeout=60.0)
                     for _ in range(connections)]
        # Its own subchannel pool: otherwise channels to one address share one connection.
        self.channels = [grpc.aio.insecure_channel(server.grpc_target, options=[("grpc.use_local_subchannel_pool", 1)])
                         for _ in range(connections)]
        self.calls = [channel.unary_unary(INFER) for channel in self.channels]

    def sender(self, door: str, connection: int) -> Send:
        if door == "REST":
            client = self.http[connection]

            async def send_rest(i: int) -> float:
                body, headers = self.rest[i % len(self.rest)]
                return rest_probability(await client.post(self.url, content=body, headers=headers))

            return send_rest
        call = self.calls[connection]

        async def send_grpc(i: int) -> float:
            return grpc_probability(await call(self.grpc[i % len(self.grpc)], timeout=60.0))

        return send_grpc

    async def close(self) -> None:
        for client in self.http:
            await client.aclose()
        for channel in self.channels:
            await channel.close()


async def closed_loop(doors: Doors, door: str, connections: int, duration_s: float, pid: int) -> Row:
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + duration_s

    async def connection(index: int) -> None:
        nonlocal errors
        send, i = doors.sender(door, index), index * 7
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            try:
                await send(i)
                latencies.append(time.perf_counter() - start)
            except (httpx.HTTPError, grpc.aio.AioRpcError):
                errors += 1
            i += 1

    server_cpu, client_cpu, began = process_tree_cpu_s(pid), time.process_time(), time.perf_counter()
    await asyncio.gather(*(connection(i) for i in range(connections)))
    seconds = time.perf_counter() - began
    ok = max(len(latencies), 1)
    return Row(
        door, connections, seconds, len(latencies), errors,
        float(np.percentile(latencies, 50) * 1000) if latencies else float("nan"),
        float(np.percentile(latencies, 99) * 1000) if latencies else float("nan"),
        (process_tree_cpu_s(pid) - server_cpu) * 1000 / ok, (time.process_time() - client_cpu) * 1000 / ok,
    )


async def agreement(doors: Doors) -> float:
    """The largest difference between the doors' probabilities over every cell."""
    rest, over_grpc = doors.sender("REST", 0), doors.sender("gRPC", 0)
    return max([abs(await rest(i) - await over_grpc(i)) for i in range(len(doors.rest))])


async def measure(server: Server, model: str, files: list[bytes], counts: list[int], duration_s: float,
                  warmup_s: float) -> tuple[float, list[Row]]:
    doors = Doors(server, model, files, max(counts))
    try:
        difference = await agreement(doors)
        for door in ("REST", "gRPC"):
            await closed_loop(doors, door, max(counts), warmup_s, server.pid)
        rows = []
        for n, connections in enumerate(counts):
            for door in (("REST", "gRPC") if n % 2 == 0 else ("gRPC", "REST")):
                row = await closed_loop(doors, door, connections, duration_s, server.pid)
                log.info("%s c=%d: %.1f req/s, p50 %.1f ms, p99 %.1f ms, %d errors", door, connections, row.per_s,
                         row.p50_ms, row.p99_ms, row.errors)
                rows.append(row)
        return difference, rows
    finally:
        await doors.close()


def table(rows: list[Row]) -> str:
    lines = ["| door | connections | req/s | p50 ms | p99 ms | errors | server core-ms/req | client core-ms/req |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.door} | {r.connections} | {r.per_s:.1f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.errors} | "
              f"{r.server_core_ms:.2f} | {r.client_core_ms:.2f} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc_vs_rest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/model.onnx"))
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per door and connection count")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load per door before measuring")
    parser.add_argument("--connections", default="1,16", help="comma list of connection counts")
    parser.add_argument("--elpv-files", type=int, default=32, help="ELPV cells sent in turn")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request would be the client's main cost
    counts = [int(c) for c in args.connections.split(",")]
    files = [data for _, data in elpv_cells(args.elpv_files)]
    model = json.loads(args.model.with_suffix(".json").read_text())["name"]
    data_dir = tempfile.mkdtemp(prefix="grpc-vs-rest-")
    spec = service_spec("grpc-vs-rest", args.model, {"DATA_DIR": data_dir})
    with Server(spec, Path(data_dir)) as server:
        difference, rows = asyncio.run(measure(server, model, files, counts, args.duration, args.warmup))
    text = (
        f"# gRPC against REST (/v2), {len(files)} ELPV cells, {args.duration:g} s per row\n\n"
        f"Command: `python -m bench.grpc_vs_rest {' '.join(sys.argv[1:] if argv is None else argv)}` "
        f"(the machine: the .json beside this file)\n\n"
        f"Largest |p_gRPC - p_REST| over the cells: {difference:.3g}\n\n{table(rows)}\n"
    )
    print(text)
    stem = args.out / f"{date.today().isoformat()}-{os.uname().nodename}-grpc-vs-rest"
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps(
        {"machine": describe(), "difference": difference,
         "rows": [asdict(row) | {"per_s": row.per_s} for row in rows]}, indent=1, default=str
    ))


if __name__ == "__main__":
    main()
