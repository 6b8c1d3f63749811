"""A real PostgreSQL for tests and benchmarks: initdb and pg_ctl in a temporary folder, stopped and started at
will (`stop("immediate")` is a crash: no checkpoint, connections cut)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self


def postgres_bin() -> Path | None:
    """Debian's server binaries (make test installs postgresql when root), else initdb on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = found[-1] if found else shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def unavailable() -> str | None:
    """Why no PostgreSQL can be started here, or None."""
    if postgres_bin() is None:
        return "no PostgreSQL server binaries (apt-get install postgresql; make test does it when root)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run the server as"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Postgres:
    """Use as a context manager; `url` is a SQLAlchemy psycopg 3 URL to the `postgres` database."""

    def __init__(self) -> None:
        why = unavailable()
        if why is not None:
            raise RuntimeError(why)
        self.binaries = postgres_bin()
        # PostgreSQL refuses to run as root: as root, the server runs as the package's postgres user.
        self._user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        self.folder = Path(tempfile.mkdtemp(prefix="quality-pg-"))
        if self._user is not None:
            os.chown(self.folder, self._user.pw_uid, self._user.pw_gid)
        self.data = self.folder / "data"
        self.port = _free_port()
        self.url = f"postgresql+psycopg://quality@127.0.0.1:{self.port}/postgres"

    def _pg(self, *args: str) -> None:
        run_as = {"user": self._user.pw_uid, "group": self._user.pw_gid} if self._user is not None else {}
        subprocess.run(args, check=True, capture_output=True, timeout=120, cwd=self.folder, **run_as)  # type: ignore[call-overload]

    def __enter__(self) -> Self:
        try:
            self._pg(str(self.binaries / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "quality",
                     "--no-sync", "-E", "UTF8")
            self.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def start(self) -> None:
        self._pg(str(self.binaries / "pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "server.log"), "-w",
                 "-o", f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self, mode: str = "fast") -> None:
        """`immediate`: the server quits at once, as on a crash (recovery runs at the next start)."""
        self._pg(str(self.binaries / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self.running:
                self.stop()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
