"""`python -m service` / `serve`: uvicorn with the settings from the environment."""

from __future__ import annotations

import copy
import signal
import sys
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from service.core.config import Settings
from service.core.metrics import Metrics
from service.core.model import ModelLoadError
from service.core.pipeline import Pipeline
from service.edge.app import create_app


def _stopped(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def log_config(settings: Settings) -> dict[str, Any]:
    """uvicorn's own logging setup, with the service's loggers on the same handler and format."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["service"] = {"handlers": ["default"], "level": settings.log_level.upper(), "propagate": False}
    return config


def load_pipeline(settings: Settings) -> Pipeline:
    """Loads the model once, before uvicorn: a failure is one line and exit 1, not a lifespan traceback."""
    try:
        return Pipeline.load(settings, Metrics())
    except ModelLoadError as exc:
        sys.exit(f"cannot start: {exc}")


def main() -> None:
    settings = Settings()
    app = create_app(settings, load_pipeline(settings))
    # uvicorn handles SIGTERM itself (graceful shutdown), then restores this handler and raises the
    # signal again: a stop after every admitted request was answered exits 0, not 143.
    signal.signal(signal.SIGTERM, _stopped)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=log_config(settings),
        # One process: the model already uses every core through onnxruntime's threads.
        workers=1,
        timeout_graceful_shutdown=settings.graceful_shutdown_s,
        access_log=settings.log_level == "debug",
        server_header=False,
    )


if __name__ == "__main__":
    main()
