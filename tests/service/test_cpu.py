"""available_cpus: affinity capped by the cgroup v2 quota."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.core.cpu import available_cpus

AFFINITY = 8


@pytest.fixture(autouse=True)
def eight_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(AFFINITY)), raising=False)


@pytest.mark.parametrize(
    ("cpu_max", "cpus"),
    [
        ("max 100000\n", AFFINITY),
        ("150000 100000\n", 2),
        ("200000 100000\n", 2),
        ("100000 100000\n", 1),
        ("50000 100000\n", 1),
        ("1 100000\n", 1),
        ("1600000 100000\n", AFFINITY),
        ("", AFFINITY),
    ],
)
def test_available_cpus_rounds_the_cgroup_quota_up_within_the_affinity(tmp_path: Path, cpu_max: str, cpus: int) -> None:
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max)
    assert available_cpus(path) == cpus


def test_available_cpus_is_the_affinity_without_a_cgroup_file(tmp_path: Path) -> None:
    assert available_cpus(tmp_path / "missing") == AFFINITY


def test_available_cpus_counts_cpus_without_sched_getaffinity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert available_cpus(tmp_path / "missing") == 4
