"""`python -m service` / `serve`: the HTTP server (HTTP_SERVER: uvicorn, or Granian embedded) with the settings
from the environment.

Every start-up failure, at any stage (the settings, the port, the model's load or its warm-up), is one line
`cannot start: ...` and exit code 1: everything that can fail runs here, before uvicorn starts.
"""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import logging
import logging.config
import os
import signal
import socket
import sys
from types import FrameType
from typing import Any, NoReturn

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError
from uvicorn.config import LOGGING_CONFIG

from service.core.config import Settings
from service.core.failures import one_line
from service.core.memory import SERVER_MALLOC_ARENAS, limit_malloc_arenas
from service.core.metrics import Metrics
from service.core.model import ModelLoadError
from service.core.pipeline import Pipeline
from service.edge.app import create_app
from service.edge.grpc.door import GrpcDoor


def _stopped(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def cannot_start(why: str) -> NoReturn:
    sys.exit(f"cannot start: {why}")


def log_config(settings: Settings) -> dict[str, Any]:
    """uvicorn's own logging setup, with the service's loggers on the same handler and format."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["service"] = {"handlers": ["default"], "level": settings.log_level.upper(), "propagate": False}
    return config


def read_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = [f"{'.'.join(map(str, e['loc'])).upper() or 'settings'}: {e['msg']}" for e in exc.errors()]
        cannot_start(f"invalid setting {'; '.join(problems)} (environment variables of the same name)")


def bind(settings: Settings) -> socket.socket:
    """The listening socket, before the model loads: a port in use fails in milliseconds, not after the load."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        sock.close()
        cannot_start(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc} (set HOST or PORT)")
    return sock


def check_grpc_port(settings: Settings) -> None:
    """GRPC_PORT free, checked before the model loads as PORT is (the gRPC server itself binds it once the
    event loop runs; were it taken by then, start-up still fails, after the load)."""
    if not settings.grpc_enabled:
        return
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((settings.host, settings.grpc_port))
        except OSError as exc:
            cannot_start(
                f"cannot listen for gRPC on {settings.host}:{settings.grpc_port}: {exc.strerror or exc} "
                "(set GRPC_PORT, or GRPC_ENABLED=false)"
            )


class DrainingServer(uvicorn.Server):
    """uvicorn, with the gRPC door's drain started when uvicorn starts its own: both doors drain at once, within
    one GRACEFUL_SHUTDOWN_S (the lifespan's stop then waits for the same drain)."""

    def __init__(self, config: uvicorn.Config, grpc_door: GrpcDoor | None) -> None:
        super().__init__(config)
        self.grpc_door = grpc_door

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.grpc_door is not None:
            self.grpc_door.drain()
            await asyncio.sleep(0)  # the drain task's first step: the gRPC server stops taking calls now
        await super().shutdown(sockets)


def load_pipeline(settings: Settings) -> tuple[Pipeline, float]:
    """Loads and warms the model once, before uvicorn: (pipeline, warm-up seconds)."""
    try:
        pipeline = Pipeline.load(settings, Metrics())
        return pipeline, pipeline.warm_up()
    except ModelLoadError as exc:
        cannot_start(" ".join(str(exc).split()))
    except Exception as exc:  # noqa: BLE001 - anything else the load raises is one line too, never a traceback
        cannot_start(f"loading the model failed: {one_line(exc)}")


def serve(app: FastAPI, settings: Settings, sock: socket.socket, grpc_door: GrpcDoor | None = None) -> None:
    if settings.http_server == "granian":
        # The gRPC door stops with the app's lifespan here, not at SIGTERM alongside HTTP as under uvicorn.
        serve_granian(app, settings, sock)
        return
    config = uvicorn.Config(
        app,
        log_level=settings.log_level,
        log_config=log_config(settings),
        # One process: the model already uses every core through onnxruntime's threads.
        workers=1,
        timeout_graceful_shutdown=settings.graceful_shutdown_s,
        access_log=settings.log_level == "debug",
        server_header=False,
    )
    server = DrainingServer(config, grpc_door)
    # uvicorn names the address only for sockets it binds itself.
    host, port = sock.getsockname()[:2]
    logging.getLogger("service").info("listening on http://%s:%d", host, port)
    server.run(sockets=[sock])
    if not server.started:  # the lifespan failed after the checks above; uvicorn logged why
        cannot_start("the application's start-up failed (its error is logged above)")


def serve_granian(app: FastAPI, settings: Settings, sock: socket.socket) -> None:
    """Granian's embedded server: in this process, on this thread's event loop, over the app already loaded (its
    process-per-worker server would import and load the model again in a child). Its HTTP parsing and socket
    I/O run in Rust threads, off the GIL. SIGTERM and SIGINT stop it: it stops accepting, the lifespan waits
    up to GRACEFUL_SHUTDOWN_S for requests in flight (service.edge.middleware.InFlight), then drains the
    pipeline; a worker still busy after twice GRACEFUL_SHUTDOWN_S (a client that never finishes its upload)
    is cancelled."""
    from granian.constants import HTTPModes, Interfaces
    from granian.log import LogLevels
    from granian.server.embed import Server as Granian

    host, port = sock.getsockname()[:2]
    # Granian binds its own listener (it takes no socket): ours has proved the port free before the model
    # loaded, and is let go only now.
    sock.close()
    config = log_config(settings)
    for name in ("_granian", "granian.access"):
        config["loggers"][name] = {"handlers": ["default"], "level": settings.log_level.upper(), "propagate": False}
    class Embedded(Granian):  # type: ignore[misc]
        async def _stop_workers(self) -> None:
            # Granian 2.8.9's own version lets the join's TimeoutError escape instead of killing the worker.
            for worker in self.wrks:
                worker.terminate()
            for worker in self.wrks:
                try:
                    await worker.join(self.workers_kill_timeout)
                except TimeoutError:
                    logging.getLogger("service").warning("graceful shutdown timed out: cancelling the worker")
                    worker.kill()
            self.wrks.clear()

    server = Embedded(
        app, address=host, port=port, interface=Interfaces.ASGI, http=HTTPModes.http1,
        log_level=LogLevels(settings.log_level),
        log_dictconfig=config, log_access=settings.log_level == "debug",
    )
    # The lifespan waits GRACEFUL_SHUTDOWN_S for requests in flight, then drains what the pipeline admitted.
    server.workers_kill_timeout = 2 * settings.graceful_shutdown_s

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for stop in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(stop, server.stop)
        await server.serve()

    logging.getLogger("service").info("listening on http://%s:%d (granian)", host, port)
    import uvloop

    uvloop.run(run())
    if server.interrupt_children:  # the lifespan failed (logged above), or the worker died
        cannot_start("the application's start-up failed (its error is logged above)")


def check_http_server(settings: Settings) -> None:
    """HTTP_SERVER=granian needs the optional package, refused before the model loads when it is missing."""
    if settings.http_server == "granian" and importlib.util.find_spec("granian") is None:
        cannot_start("HTTP_SERVER=granian needs the granian package, an extra: pip install 'cell-classifier[granian]' "
                     "(the Docker image carries uvicorn only), or unset HTTP_SERVER")


def main() -> None:
    limit_malloc_arenas(SERVER_MALLOC_ARENAS, os.environ)  # before any thread starts
    settings = read_settings()
    check_http_server(settings)
    sock = bind(settings)
    check_grpc_port(settings)
    pipeline, warm_up_s = load_pipeline(settings)
    grpc_door = GrpcDoor(settings) if settings.grpc_enabled else None
    app = create_app(settings, pipeline, warm_up_s=warm_up_s, grpc_door=grpc_door)
    # uvicorn handles SIGTERM itself (graceful shutdown), then restores this handler and raises the
    # signal again: a stop after every admitted request was answered exits 0, not 143.
    signal.signal(signal.SIGTERM, _stopped)
    serve(app, settings, sock, grpc_door)


if __name__ == "__main__":
    main()
