"""What ran the benchmark: CPU, cores, memory, OS and library versions."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

from service.core.cpu import available_cpus

PACKAGES = ("onnxruntime", "pillow", "numpy", "fastapi", "uvicorn", "tensorflow", "keras")


def _lscpu() -> dict[str, str]:
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, check=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in output.splitlines())}


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def describe() -> dict[str, object]:
    lscpu = _lscpu()
    flags = lscpu.get("Flags", "").split()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": socket.gethostname(),
        "cpu": lscpu.get("Model name", platform.processor() or "unknown"),
        "cores_online": os.cpu_count(),
        "cores_available": available_cpus(),
        "threads_per_core": lscpu.get("Thread(s) per core"),
        "isa": [flag for flag in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
                if flag in flags],
        "memory_gib": _memory_gib(),
        # Anything else running (a training job) distorts every figure; the 1-minute load shows it.
        "load_average_1min": round(os.getloadavg()[0], 2),
        "os": platform.platform(),
        "versions": _versions(),
    }
