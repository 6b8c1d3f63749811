"""Servers alternated run by run: the comparison that holds on a machine whose load drifts.

All servers are started at once (each idle while another is loaded), then for each corpus and round every
server gets one wrk run, in an order rotated each round. Per run: requests/s, p99, cores busy (the process
tree's CPU seconds over the run's seconds), core-ms per request and the peak RSS (VmHWM, reset before the
run); per server its RSS at ready. The table gives each round's requests/s and its ratio to the reference
server (baseline (c), the 25-line server) from the same round: ratios taken minutes apart on a shared
machine say little. After the rounds, one more run per server and corpus under py-spy (`record --gil`, not
counted in the table: sampling stops the process) gives the event loop's share of the samples that held the
GIL: how much of the Python work the one loop thread carries.
"""

from __future__ import annotations

import collections
import logging
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean

from bench import load
from bench.corpora import Corpus
from bench.endtoend import check_answers
from bench.servers import Server, ServerError, ServerSpec, core_ms_per_request

log = logging.getLogger("bench")


@dataclass(frozen=True)
class AlternatedRun:
    server: str
    corpus: str
    round: int
    connections: int
    requests_per_s: float
    p99_ms: float | None
    cores_busy: float
    core_ms_per_request: float | None
    peak_rss_mib: float | None
    non_2xx: int
    socket_errors: int


@dataclass
class Alternated:
    reference: str | None = None
    runs: list[AlternatedRun] = field(default_factory=list)
    rss_at_ready_mib: dict[str, float | None] = field(default_factory=dict)
    # (server, corpus) -> the event loop's share of the GIL-holding samples (py-spy), when py-spy runs here.
    loop_gil_share: dict[str, dict[str, float]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    form: bool = False  # uploads as multipart `file` fields, not raw bodies


def measure(
    specs: Sequence[ServerSpec], corpora: Sequence[Corpus], connections: int, duration_s: int, warmup_s: int,
    rounds: int, log_dir: Path, reference: str | None = None, *, form: bool = False,
) -> Alternated:
    """`form`: every upload as a multipart `file` field instead of a raw body."""
    result = Alternated(reference=reference, form=form)
    servers: list[Server] = []
    try:
        for spec in specs:
            server = Server(spec, log_dir)
            try:
                server.start()
            except ServerError as exc:
                log.error("%s", exc)
                result.errors[spec.name] = str(exc).splitlines()[0]
                server.stop()
                continue
            servers.append(server)
            result.rss_at_ready_mib[spec.name] = server.rss_at_ready_mib
            log.info("alternated: %s ready, RSS %.0f MiB", spec.name, server.rss_at_ready_mib or 0)
        for corpus in corpora:
            for server in servers:
                check_answers(server, corpus, form=form)
                if warmup_s > 0:
                    load.run(server.url, corpus.list_file, connections, warmup_s, form=form)
            for number in range(rounds):
                # Rotated, so no server always runs first (or right after the heaviest).
                order = servers[number % len(servers):] + servers[: number % len(servers)]
                for server in order:
                    run = _one(server, corpus, number, connections, duration_s, form)
                    result.runs.append(run)
                    log.info("  %s %s round %d: %.1f req/s, %.2f cores, %s core-ms/req", run.server, run.corpus,
                             number + 1, run.requests_per_s, run.cores_busy, _n(run.core_ms_per_request))
            for server in servers:
                share = loop_gil_share(server, corpus, connections, duration_s, form)
                if share is not None:
                    result.loop_gil_share.setdefault(server.spec.name, {})[corpus.name] = share
                    log.info("  %s %s: the event loop holds %.0f %% of the GIL samples", server.spec.name,
                             corpus.name, 100 * share)
    except (ServerError, load.LoadError) as exc:
        log.error("alternated: %s", exc)
        result.errors["run"] = str(exc).splitlines()[0]
    finally:
        for server in servers:
            server.stop()
    return result


def _one(
    server: Server, corpus: Corpus, number: int, connections: int, duration_s: int, form: bool
) -> AlternatedRun:
    server.wait_idle()
    reset = server.reset_peak_rss()
    before = server.tree_cpu_seconds()
    result = load.run(server.url, corpus.list_file, connections, duration_s, form=form)
    cpu_s = server.tree_cpu_seconds() - before
    return AlternatedRun(
        server=server.spec.name, corpus=corpus.name, round=number + 1, connections=connections,
        requests_per_s=result.requests_per_s, p99_ms=result.p99_ms, cores_busy=cpu_s / result.duration_s,
        core_ms_per_request=core_ms_per_request(cpu_s, result.requests),
        peak_rss_mib=server.peak_rss_mib() if reset else None, non_2xx=result.non_2xx,
        socket_errors=result.socket_errors,
    )


def _py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def loop_gil_share(
    server: Server, corpus: Corpus, connections: int, duration_s: int, form: bool = False
) -> float | None:
    """One wrk run with py-spy sampling the GIL's holder: the main thread's (the event loop's) share of the
    samples. None where py-spy is missing or may not attach (ptrace refused)."""
    spy = _py_spy()
    if spy is None:
        return None
    with tempfile.TemporaryDirectory(prefix="bench-gil-") as folder:
        out = Path(folder) / "gil.txt"
        sampler = subprocess.Popen(
            [spy, "record", "--gil", "--threads", "--rate", "100", "--duration", str(duration_s), "--format", "raw",
             "--output", str(out), "--pid", str(server.pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        load.run(server.url, corpus.list_file, connections, duration_s, form=form)
        try:
            sampler.wait(timeout=duration_s + 30)
        except subprocess.TimeoutExpired:
            sampler.kill()
            sampler.wait()
            return None
        if sampler.returncode != 0 or not out.exists():
            return None
        return main_thread_share(out.read_text())


def main_thread_share(collapsed: str) -> float | None:
    """py-spy's raw (collapsed) stacks with --threads, `thread (id): name;frame;... count`, -> MainThread's share
    of the samples."""
    samples: collections.Counter[bool] = collections.Counter()
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not (stack and count.isdigit()):
            continue
        thread = next((frame for frame in stack.split(";") if frame.startswith("thread (")), "")
        samples[thread.partition("): ")[2] == "MainThread"] += int(count)
    total = samples[True] + samples[False]
    return samples[True] / total if total else None


def _n(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _percent(share: float | None) -> str:
    return "–" if share is None else f"{100 * share:.0f} %"


def render(result: Alternated) -> list[str]:
    if not result.runs and not result.errors:
        return []
    servers = list(dict.fromkeys(run.server for run in result.runs))
    corpora = list(dict.fromkeys(run.corpus for run in result.runs))
    reference = result.reference if result.reference in servers else None
    rows = []
    for corpus in corpora:
        for server in servers:
            runs = [r for r in result.runs if r.server == server and r.corpus == corpus]
            ratios = []
            for run in runs:
                ref = next((r for r in result.runs if r.server == reference and r.corpus == corpus
                            and r.round == run.round), None)
                ratios.append(run.requests_per_s / ref.requests_per_s if ref and ref.requests_per_s else None)
            costs = [r.core_ms_per_request for r in runs if r.core_ms_per_request is not None]
            peaks = [r.peak_rss_mib for r in runs if r.peak_rss_mib is not None]
            rows.append((
                corpus, server, " / ".join(_n(r.requests_per_s) for r in runs),
                " / ".join(_n(x, 2) for x in ratios) if reference else "–",
                _n(mean(r.cores_busy for r in runs), 2), _n(mean(costs) if costs else None, 2),
                _n(result.rss_at_ready_mib.get(server), 0), _n(max(peaks) if peaks else None, 0),
                _percent(result.loop_gil_share.get(server, {}).get(corpus)),
                sum(r.non_2xx + r.socket_errors for r in runs),
            ))
    connections = result.runs[0].connections if result.runs else "?"
    headers = ("corpus", "server", "req/s per round", f"÷ {reference or 'reference'} (same round)",
               "cores busy", "core-ms/req", "RSS at ready MiB", "peak RSS MiB", "loop's GIL share", "errors")
    lines = [
        "## Alternated servers", "",
        f"{connections} connections, {'multipart uploads' if result.form else 'raw image bodies'}; every server "
        "loaded once per round, the order rotated each round; ratios are to the reference server's run of the same "
        "round.", "",
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(headers))) + "|",
        *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows), "",
    ]
    for name, error in result.errors.items():
        lines.append(f"- {name}: {error}")
    return [*lines, ""] if result.errors else lines
