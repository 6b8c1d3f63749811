"""End to end: each server as a real process under wrk, per corpus and connection count."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from bench import load
from bench.corpora import Corpus
from bench.servers import Server, ServerError, ServerSpec, core_ms_per_request

log = logging.getLogger("bench")


@dataclass(frozen=True)
class LoadRow:
    server: str
    corpus: str
    connections: int
    requests_per_s: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    requests: int
    non_2xx: int
    socket_errors: int
    peak_rss_mib: float | None
    # The server's process tree's CPU time over the run ÷ requests answered (bench/cpu.py).
    core_ms_per_request: float | None = None
    # The same CPU time ÷ the run's seconds: how much of the machine the server used.
    cores_busy: float | None = None


@dataclass(frozen=True)
class ServerRow:
    server: str
    startup_s: float | None
    rss_at_ready_mib: float | None
    peak_rss_under_load_mib: float | None
    error: str | None = None


@dataclass
class EndToEnd:
    rows: list[LoadRow] = field(default_factory=list)
    servers: list[ServerRow] = field(default_factory=list)

    def to_json(self) -> dict[str, list[dict]]:
        return {"rows": [asdict(r) for r in self.rows], "servers": [asdict(s) for s in self.servers]}


def check_answers(server: Server, corpus: Corpus, *, form: bool = False) -> None:
    """One request per file before any load (raw bodies, or multipart with `form`): every file must get a 200
    with a probability in it."""
    with httpx.Client(timeout=load.TIMEOUT_S) as client:
        for path in corpus.paths:
            content_type = "image/png" if path.suffix.lower() == ".png" else "image/jpeg"
            try:
                if form:
                    files = {"file": (path.name, path.read_bytes(), content_type)}
                    response = client.post(f"{server.url}/predict", files=files)
                else:
                    response = client.post(
                        f"{server.url}/predict", content=path.read_bytes(), headers={"Content-Type": content_type}
                    )
            except httpx.HTTPError as exc:
                raise ServerError(f"{server.spec.name} did not answer {path.name}: {exc!r}") from exc
            if response.status_code != 200 or "probability" not in response.text:
                raise ServerError(
                    f"{server.spec.name} answered {response.status_code} to {path.name}: {response.text[:300]}"
                )


def measure_server(
    spec: ServerSpec,
    corpora: Sequence[Corpus],
    connections: Sequence[int],
    duration_s: int,
    warmup_s: int,
    log_dir: Path,
    on_row: Callable[[LoadRow], None] = lambda row: None,
) -> tuple[ServerRow, list[LoadRow]]:
    """Starts the server once, loads it with every corpus and connection count, stops it.

    A server that fails keeps the rows it gave; its ServerRow says why it stopped."""
    server = Server(spec, log_dir)
    rows: list[LoadRow] = []
    peaks: list[float] = []
    error = None
    try:
        with server:
            log.info("%s ready in %.2f s on %s", spec.name, server.startup_s, server.url)
            for corpus in corpora:
                check_answers(server, corpus)
                if warmup_s > 0:
                    load.run(server.url, corpus.list_file, max(connections), warmup_s)
                for count in connections:
                    row = _one_run(server, corpus, count, duration_s)
                    if row.peak_rss_mib is not None:
                        peaks.append(row.peak_rss_mib)
                    rows.append(row)
                    on_row(row)
            if not peaks:
                # clear_refs refused: the lifetime peak is the best figure left.
                lifetime = server.peak_rss_mib()
                peaks = [lifetime] if lifetime is not None else []
    except (ServerError, load.LoadError) as exc:
        log.error("%s: %s", spec.name, exc)
        error = str(exc).strip().splitlines()[0]
    return ServerRow(spec.name, server.startup_s, server.rss_at_ready_mib, max(peaks, default=None), error), rows


def _one_run(server: Server, corpus: Corpus, connections: int, duration_s: int) -> LoadRow:
    if not server.wait_idle():
        log.warning("%s still busy before the %d-connection run", server.spec.name, connections)
    reset = server.reset_peak_rss()
    cpu_before = server.tree_cpu_seconds()
    result = load.run(server.url, corpus.list_file, connections, duration_s)
    cpu_s = server.tree_cpu_seconds() - cpu_before
    return LoadRow(
        server=server.spec.name, corpus=corpus.name, connections=connections,
        requests_per_s=result.requests_per_s, p50_ms=result.p50_ms, p90_ms=result.p90_ms,
        p99_ms=result.p99_ms, max_ms=result.max_ms, requests=result.requests,
        non_2xx=result.non_2xx, socket_errors=result.socket_errors,
        peak_rss_mib=server.peak_rss_mib() if reset else None,
        core_ms_per_request=core_ms_per_request(cpu_s, result.requests),
        cores_busy=cpu_s / result.duration_s if result.duration_s > 0 else None,
    )
