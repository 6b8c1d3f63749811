"""Peak RSS of a real `python -m service` while clients each send one large /v2 JSON body.

    python -m bench.v2_json_memory --model models/model.onnx --budget-mb 121 --clients 1 --clients 4

Each body is an `image_bytes` tensor whose one element is a string of SIZE_MB megabytes ending in an escaped
character beyond the BMP, the costliest JSON to parse per byte (Python then holds 4 bytes per character). The
server runs with DECODE_MEMORY_BUDGET_BYTES set (121 MB is what a `--memory 512m` container gets, 443 MB a 1g
one). Prints each run's statuses and the peak RSS (VmHWM, reset before the requests) above the RSS at ready.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
from pathlib import Path

import httpx

from bench.servers import Server, service_spec

MB = 1_000_000


def body(size_mb: int) -> bytes:
    text = "A" * (size_mb * MB) + "\\ud83d\\ude00"
    return ('{"inputs":[{"name":"image_bytes","datatype":"BYTES","shape":[1],"data":["' + text + '"]}]}').encode()


def run(model: Path, budget_mb: int, clients: int, size_mb: int) -> str:
    env = {"DECODE_MEMORY_BUDGET_BYTES": str(budget_mb * MB), "ENGINE": "onnxruntime"}
    with Server(service_spec("v2-json", model, env), Path(tempfile.mkdtemp()), 120.0) as server:
        name = httpx.get(f"{server.url}/model", timeout=10).json()["name"]
        payload = body(size_mb)
        ready = server.rss_mib() or 0.0
        server.reset_peak_rss()
        statuses: list[int] = []

        def send() -> None:
            response = httpx.post(f"{server.url}/v2/models/{name}/infer", content=payload, timeout=120)
            statuses.append(response.status_code)

        threads = [threading.Thread(target=send) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        peak = server.peak_rss_mib() or 0.0
    return (
        f"budget {budget_mb} MB, {clients} x {len(payload) / MB:.0f} MB: statuses {sorted(statuses)}, "
        f"RSS {ready:.0f} MiB at ready, peak +{peak - ready:.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="an .onnx file with its card beside it")
    parser.add_argument("--budget-mb", type=int, action="append", help="DECODE_MEMORY_BUDGET_BYTES in MB")
    parser.add_argument("--clients", type=int, action="append", help="concurrent requests (repeatable)")
    parser.add_argument("--size-mb", type=int, default=48, help="the string's length in MB")
    args = parser.parse_args()
    for budget in args.budget_mb or [121, 443]:
        for clients in args.clients or [1, 4]:
            print(run(args.model, budget, clients, args.size_mb), flush=True)


if __name__ == "__main__":
    main()
