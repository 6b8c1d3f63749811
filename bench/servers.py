"""Servers under test as real uvicorn processes on 127.0.0.1: spawn, wait until ready, peak RSS, stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import httpx

HOST = "127.0.0.1"


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


def _status_kib(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Server:
    """One running server; use as a context manager so it is stopped whatever happens."""

    def __init__(self, spec: ServerSpec, log_dir: Path, ready_timeout_s: float = 180.0) -> None:
        self.spec = spec
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log_path = log_dir / f"{spec.name}.log"
        self._ready_timeout_s = ready_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.startup_s: float | None = None
        self.rss_at_ready_mib: float | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None, "the server is not running"
        return self._process.pid

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

    def start(self) -> None:
        """Spawns the server and waits for GET /readyz 200; startup_s is spawn -> ready."""
        command = [*self.spec.command, *(["--port", str(self.port)] if self.spec.uvicorn_cli else [])]
        env = {**os.environ, **self.spec.env, "PORT": str(self.port)}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        start = time.perf_counter()
        self._process = subprocess.Popen(command, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = start + self._ready_timeout_s
        with httpx.Client(timeout=1.0) as client:
            while time.perf_counter() < deadline:
                self.check_alive()
                try:
                    if client.get(f"{self.url}/readyz").status_code == 200:
                        self.startup_s = time.perf_counter() - start
                        self.rss_at_ready_mib = self.rss_mib()
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.02)
        raise ServerError(f"{self.spec.name} was not ready within {self._ready_timeout_s:g} s: {self._log_tail()}")

    def stop(self) -> None:
        """SIGTERM (graceful), then SIGKILL if it has not exited within 30 s."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def check_alive(self) -> None:
        assert self._process is not None, "the server is not running"
        if self._process.poll() is not None:
            raise ServerError(f"{self.spec.name} exited with {self._process.returncode}: {self._log_tail()}")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (all its threads)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        except OSError as exc:
            raise ServerError(f"{self.spec.name} is gone: {self._log_tail()}") from exc
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

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
        if self._log is not None:
            self._log.flush()
        try:
            lines = [line for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            lines = []
        return f"{lines[-1].strip() if lines else '(empty log)'} (log: {self.log_path})"
