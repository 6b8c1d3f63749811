"""The load generator: wrk (C, event loop, little CPU) with bench/wrk/post.lua posting raw image bodies."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).with_name("wrk") / "post.lua"
MARKER = "BENCH_JSON "
# Longer than the service's REQUEST_TIMEOUT_S, so slow answers count as slow and not as lost.
TIMEOUT_S = 35


class LoadError(RuntimeError):
    """wrk is missing or did not report."""


@dataclass(frozen=True)
class LoadResult:
    connections: int
    threads: int
    duration_s: float
    requests: int
    requests_per_s: float
    # None when no request finished within the run.
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    mean_ms: float | None
    non_2xx: int
    socket_errors: int  # connect + read + write + timeout
    mib_per_s: float


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise LoadError("wrk is not installed: apt-get install -y wrk (or make bench, which installs it)")
    return path


def run(url: str, file_list: Path, connections: int, duration_s: int, *, form: bool = False) -> LoadResult:
    """A closed loop of `connections` connections for duration_s (wrk takes whole seconds); `form`: each file in
    a multipart body's `file` field instead of the raw body."""
    threads = 1 if connections < 4 else 2
    command = [
        wrk_path(), f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", f"--timeout={TIMEOUT_S}s",
        "--latency", "-s", str(SCRIPT), url, "--", str(file_list), *(["form"] if form else []),
    ]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + TIMEOUT_S + 30)
    except subprocess.TimeoutExpired as exc:
        raise LoadError(f"wrk did not finish within {exc.timeout:g} s") from exc
    lines = [line for line in completed.stdout.splitlines() if line.startswith(MARKER)]
    if completed.returncode != 0 or not lines:
        raise LoadError(f"wrk failed ({completed.returncode}): {completed.stderr.strip() or completed.stdout[-2000:]}")
    raw = json.loads(lines[-1].removeprefix(MARKER))
    seconds = raw["duration_us"] / 1e6
    answered = raw["requests"] > 0

    def ms(key: str) -> float | None:
        return raw[key] / 1000 if answered else None

    return LoadResult(
        connections=connections,
        threads=threads,
        duration_s=seconds,
        requests=raw["requests"],
        requests_per_s=raw["requests"] / seconds,
        p50_ms=ms("p50_us"),
        p90_ms=ms("p90_us"),
        p99_ms=ms("p99_us"),
        max_ms=ms("max_us"),
        mean_ms=ms("mean_us"),
        non_2xx=raw["status_errors"],
        socket_errors=raw["connect_errors"] + raw["read_errors"] + raw["write_errors"] + raw["timeouts"],
        mib_per_s=raw["bytes"] / seconds / 2**20,
    )
