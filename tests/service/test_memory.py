"""available_memory reads the container's limit (cgroup v2 or v1) and the machine's MemTotal; the C heap's two
calls (arena limit, trim) reach glibc."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.core.memory import available_memory, limit_malloc_arenas, return_freed_memory

MEMINFO = "MemTotal:       24684096 kB\nMemFree:        17046776 kB\n"
MEM_TOTAL = 24684096 * 1024
V1_UNLIMITED = "9223372036854771712\n"


def files(tmp_path: Path, v2: str | None, v1: str | None, meminfo: str | None = MEMINFO) -> dict[str, Path]:
    paths = {"v2": tmp_path / "memory.max", "v1": tmp_path / "memory.limit_in_bytes", "meminfo": tmp_path / "meminfo"}
    for key, text in (("v2", v2), ("v1", v1), ("meminfo", meminfo)):
        if text is not None:
            paths[key].write_text(text)
    return paths


@pytest.mark.parametrize(
    ("v2", "v1", "expected"),
    [
        ("1073741824\n", None, 1073741824),
        ("max\n", None, MEM_TOTAL),
        (None, "536870912\n", 536870912),
        (None, V1_UNLIMITED, MEM_TOTAL),
        (None, None, MEM_TOTAL),
        ("99999999999999\n", None, MEM_TOTAL),
        ("garbage\n", None, MEM_TOTAL),
    ],
)
def test_available_memory_is_the_cgroup_limit_capped_by_mem_total(
    tmp_path: Path, v2: str | None, v1: str | None, expected: int
) -> None:
    assert available_memory(**files(tmp_path, v2, v1)) == expected


def test_available_memory_is_unknown_without_cgroup_or_meminfo(tmp_path: Path) -> None:
    assert available_memory(**files(tmp_path, None, None, meminfo=None)) is None


def test_the_malloc_arena_limit_leaves_a_set_malloc_arena_max_alone() -> None:
    assert limit_malloc_arenas(2, {"MALLOC_ARENA_MAX": "8"}) is False


def test_the_malloc_arena_limit_and_the_heap_trim_are_taken_by_glibc() -> None:
    """This suite runs on glibc (Debian, the image's base): both calls exist and succeed."""
    assert limit_malloc_arenas(8, {}) is True  # 8: this test process's own arenas stay as glibc's default allows
    assert return_freed_memory() is True
