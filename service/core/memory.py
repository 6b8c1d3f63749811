"""How much memory this process may really use."""

from __future__ import annotations

import ctypes
from pathlib import Path

CGROUP_V2_MEMORY_MAX = Path("/sys/fs/cgroup/memory.max")
CGROUP_V1_MEMORY_LIMIT = Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")
MEMINFO = Path("/proc/meminfo")


def _cgroup_limit(path: Path) -> int | None:
    """memory.max ("max" or bytes) or v1 memory.limit_in_bytes (a huge number when unlimited)."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def _mem_total(meminfo: Path) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def available_memory(
    v2: Path = CGROUP_V2_MEMORY_MAX, v1: Path = CGROUP_V1_MEMORY_LIMIT, meminfo: Path = MEMINFO
) -> int | None:
    """The container's limit (`docker run --memory`, cgroup v2 or v1) capped by the machine's MemTotal, which
    /proc/meminfo reports unchanged inside a container; None when neither can be read."""
    known = [limit for limit in (_cgroup_limit(v2), _cgroup_limit(v1), _mem_total(meminfo)) if limit is not None]
    return min(known) if known else None


def return_freed_memory() -> bool:
    """Hands the C heap's free pages back to the system (glibc's malloc_trim); False where the C library has no
    such call (musl). glibc keeps what a thread freed in its arena: after a version's warm-up and measurement,
    11 MiB of RSS at ready (BENCHMARKS.md). No library wraps this one call."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    trim(0)
    return True
