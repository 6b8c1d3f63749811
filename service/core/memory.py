"""How much memory this process may really use."""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Mapping
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


def _c_library(name: str) -> Callable[..., int] | None:
    """A function of the process's C library (glibc's heap calls), or None where it has none (musl). No library
    wraps these two calls."""
    try:
        return getattr(ctypes.CDLL(None), name)  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


def return_freed_memory() -> bool:
    """Hands the C heap's free pages back to the system (glibc's malloc_trim); False where the C library has no
    such call. glibc keeps what a thread freed in its arena: after a version's warm-up and measurement, 11 MiB of
    RSS at ready (BENCHMARKS.md)."""
    trim = _c_library("malloc_trim")
    if trim is None:
        return False
    trim(0)
    return True


# glibc's mallopt parameter for the most arenas (malloc.h).
_M_ARENA_MAX = -8
# Heap arenas for the server process. glibc gives each thread that contends for the heap an arena of its own (up
# to 8 per core) and keeps what each freed: with four decode threads, sixteen 12 MP multipart uploads at once
# peaked at 384 MiB of RSS against 285 with two arenas, for the same requests/s (ELPV and 1080p, alternated;
# BENCHMARKS.md). MALLOC_ARENA_MAX in the environment, glibc's own variable, takes precedence.
SERVER_MALLOC_ARENAS = 2


def limit_malloc_arenas(arenas: int, environment: Mapping[str, str]) -> bool:
    """Before the process starts its threads: at most `arenas` glibc heap arenas, unless MALLOC_ARENA_MAX is set
    in `environment` (glibc read it at start); False where it was set or the C library has no such call."""
    mallopt = _c_library("mallopt")
    if "MALLOC_ARENA_MAX" in environment or mallopt is None:
        return False
    return bool(mallopt(_M_ARENA_MAX, arenas))
