"""The one real-server harness: a server as a process on 127.0.0.1 (spawn, wait until ready, RSS, stop).

Used by the benchmarks and by the tests that need a real uvicorn; bench imports nothing from tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[1]


class ServerError(RuntimeError):
    """A server that did not start or answered wrongly; the message quotes its log."""


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server under test."""

    name: str
    command: tuple[str, ...]  # the port is passed in env PORT and appended as --port for uvicorn commands
    env: Mapping[str, str] = field(default_factory=dict)
    uvicorn_cli: bool = False


def service_spec(name: str, model: Path, extra_env: Mapping[str, str]) -> ServerSpec:
    """`python -m service` as deployed, with MODEL_PATH and any extra settings (MAX_BATCH_SIZE=...)."""
    env = {"MODEL_PATH": str(model), "HOST": HOST, "LOG_LEVEL": "warning", **extra_env}
    return ServerSpec(name, (sys.executable, "-m", "service"), env)


def baseline_spec(name: str, module: str, env: Mapping[str, str]) -> ServerSpec:
    command = (sys.executable, "-m", "uvicorn", f"{module}:app", "--host", HOST, "--workers", "1",
               "--log-level", "warning", "--no-access-log")
    return ServerSpec(name, command, {"TF_CPP_MIN_LOG_LEVEL": "2", **env}, uvicorn_cli=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _setting_names() -> frozenset[str]:
    from service.core.config import Settings

    return frozenset(name.upper() for name in Settings.model_fields)


def inherited_env() -> dict[str, str]:
    """This process's environment less every variable that names a service setting, so a server under
    test gets exactly the settings its spec gives (an API_KEY exported in the shell must not leak in)."""
    names = _setting_names()
    return {key: value for key, value in os.environ.items() if key.upper() not in names}


def wait_until_ready(
    url: str, exited: Callable[[], str | None], timeout_s: float, interval_s: float = 0.05
) -> str | None:
    """None once `url`/readyz answers 200; otherwise why not: what `exited()` reports, or the timeout.
    Shared by real processes (Server) and containers (the Docker tests)."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            why = exited()
            if why is not None:
                return why
            try:
                if client.get(f"{url}/readyz").status_code == 200:
                    return None
            except httpx.TransportError:
                pass
            time.sleep(interval_s)
    return f"/readyz did not answer 200 within {timeout_s:g} s"


def _status_kib(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _stat_fields(pid: int) -> list[str] | None:
    try:
        # After the last ')': a command name may hold spaces or parentheses.
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def process_tree_cpu_s(root: int) -> float:
    """User + system CPU seconds of `root`, every live descendant, and the children it has reaped (cutime,
    cstime): a worker or decode process counts as the server's own."""
    ticks = 0
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat_fields(int(entry))) is not None:
            parents[int(entry)] = int(fields[1])  # fields[1]: ppid (the line's 4th field)
    tree, todo = {root}, [root]
    while todo:
        parent = todo.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in tree:
                tree.add(pid)
                todo.append(pid)
    for pid in tree:
        fields = _stat_fields(pid)
        if fields is not None:
            # utime, stime (14th, 15th fields of the line); the root adds its reaped children's.
            ticks += int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if pid == root else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def core_ms_per_request(cpu_s: float, requests: int) -> float | None:
    """CPU seconds spent over a run ÷ the requests it answered, in core-milliseconds; None without requests."""
    return cpu_s * 1000 / requests if requests > 0 else None


class Server:
    """One real server process; use as a context manager so it is stopped whatever happens.
    `start()` = `spawn()` + `wait_ready()`; tests of start-up failures spawn without waiting."""

    def __init__(self, spec: ServerSpec, log_dir: Path, ready_timeout_s: float = 180.0) -> None:
        self.spec = spec
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        # Its own gRPC port too (GRPC_PORT's default is one fixed port, which parallel servers would share).
        self.grpc_port = int(spec.env.get("GRPC_PORT", free_port()))
        self.grpc_target = f"{HOST}:{self.grpc_port}"
        self.log_path = log_dir / f"{spec.name}.log"
        self._ready_timeout_s = ready_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._spawned_at = 0.0
        self.startup_s: float | None = None
        self.rss_at_ready_mib: float | None = None

    @property
    def base_url(self) -> str:
        return self.url

    @property
    def process(self) -> subprocess.Popen[bytes]:
        assert self._process is not None, "the server is not running"
        return self._process

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def spawn(self) -> Self:
        command = [*self.spec.command, *(["--port", str(self.port)] if self.spec.uvicorn_cli else [])]
        env = {
            **inherited_env(), "PYTHONUNBUFFERED": "1", **self.spec.env, "PORT": str(self.port),
            "GRPC_PORT": str(self.grpc_port),
        }
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._spawned_at = time.perf_counter()
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Waits for GET /readyz 200; startup_s is spawn -> ready. ServerError quotes the log otherwise."""
        why = wait_until_ready(self.url, self._exited, timeout_s or self._ready_timeout_s, interval_s=0.02)
        if why is not None:
            raise ServerError(f"{self.spec.name}: {why}: {self._log_tail()}")
        self.startup_s = time.perf_counter() - self._spawned_at
        self.rss_at_ready_mib = self.rss_mib()

    def start(self) -> None:
        self.spawn()
        self.wait_ready()

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and the exit status; SIGKILL and TimeoutExpired if it does not stop in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise
        return self.process.returncode

    def stop(self) -> None:
        """SIGTERM (graceful), then SIGKILL if it has not exited within 30 s; never raises."""
        if self._process is not None and self._process.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.terminate()

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def _exited(self) -> str | None:
        code = self.process.poll()
        return None if code is None else f"exited with {code}"

    def check_alive(self) -> None:
        why = self._exited()
        if why is not None:
            raise ServerError(f"{self.spec.name} {why}: {self._log_tail()}")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (all its threads)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        except OSError as exc:
            raise ServerError(f"{self.spec.name} is gone: {self._log_tail()}") from exc
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def tree_cpu_seconds(self) -> float:
        """As cpu_seconds, for the process and every process it started."""
        self.check_alive()
        return process_tree_cpu_s(self.pid)

    def wait_idle(self, busy_fraction: float = 0.05, window_s: float = 0.25, timeout_s: float = 60.0) -> bool:
        """Waits until requests left over from the previous run (answered to closed connections) are done."""
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            self.check_alive()
            before = self.cpu_seconds()
            time.sleep(window_s)
            if self.cpu_seconds() - before <= busy_fraction * window_s:
                return True
        return False

    def rss_kib(self) -> int:
        kib = _status_kib(self.pid, "VmRSS")
        if kib is None:
            raise ServerError(f"{self.spec.name} has no VmRSS: {self._log_tail()}")
        return kib

    def rss_mib(self) -> float | None:
        kib = _status_kib(self.pid, "VmRSS")
        return None if kib is None else kib / 1024

    def reset_peak_rss(self) -> bool:
        """Writing 5 to clear_refs resets VmHWM (Linux >= 4.0), so the next peak is this load's alone."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def peak_rss_mib(self) -> float | None:
        kib = _status_kib(self.pid, "VmHWM")
        return None if kib is None else kib / 1024

    def _log_tail(self) -> str:
        """The log's last line (where uvicorn and the service say why they stopped) and where the rest is."""
        try:
            lines = [line for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            lines = []
        return f"{lines[-1].strip() if lines else '(empty log)'} (log: {self.log_path})"
