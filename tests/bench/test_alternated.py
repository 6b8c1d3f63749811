"""bench.alternated's table: each round's ratio to the reference server's run of the same round."""

from __future__ import annotations

import pytest

from bench.alternated import Alternated, AlternatedRun, main_thread_share, render


def run(server: str, round: int, rps: float, cores: float = 1.5, peak: float | None = 200.0) -> AlternatedRun:
    return AlternatedRun(server, "elpv", round, 16, rps, 50.0, cores, 1000 * cores / rps, peak, 0, 0)


def test_ratios_pair_runs_of_the_same_round() -> None:
    result = Alternated(
        reference="baseline",
        runs=[run("service", 1, 90.0), run("baseline", 1, 100.0), run("service", 2, 60.0, 1.0),
              run("baseline", 2, 50.0, peak=None)],
        rss_at_ready_mib={"service": 234.0, "baseline": 132.0},
    )
    rows = {line.split(" | ")[1]: line for line in render(result) if line.startswith("| elpv")}
    assert "90.0 / 60.0 | 0.90 / 1.20 | 1.25 |" in rows["service"]
    assert "| 234 | 200 | – | 0 |" in rows["service"]
    assert "1.00 / 1.00" in rows["baseline"]


@pytest.mark.parametrize("reference", [None, "absent"])
def test_without_a_reference_run_there_are_no_ratios(reference: str | None) -> None:
    result = Alternated(reference=reference, runs=[run("service", 1, 90.0)])
    (row,) = [line for line in render(result) if line.startswith("| elpv")]
    assert "| 90.0 | – |" in row


def test_a_server_that_did_not_start_is_named() -> None:
    assert "- service-granian: did not start" in render(Alternated(errors={"service-granian": "did not start"}))


def test_the_loops_gil_share_is_the_main_threads_share_of_the_samples() -> None:
    collapsed = "\n".join([
        "thread (8840): MainThread;Runner.run (asyncio/runners.py:118) 70",
        "thread (8878): decode_0;_decode (service/core/lanes.py:88) 20",
        "thread (8840): MainThread;send (uvicorn/protocols/http/httptools_impl.py:522) 10",
        "thread (8841): MainThreadPool;work (x.py:1) 100",
        "",
    ])
    assert main_thread_share(collapsed) == pytest.approx(80 / 200)
    assert main_thread_share("") is None


def test_the_loops_gil_share_is_in_its_column() -> None:
    result = Alternated(runs=[run("service", 1, 90.0)], loop_gil_share={"service": {"elpv": 0.7}})
    (row,) = [line for line in render(result) if line.startswith("| elpv")]
    assert "| 70 % | 0 |" in row
