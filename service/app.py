"""The FastAPI application: `uvicorn service.app:app`, or `create_app(settings)` in tests."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from service.config import Settings
from service.errors import install_error_handlers
from service.limits import BodySizeLimit
from service.metrics import Metrics, MetricsMiddleware
from service.model import ModelLoadError
from service.routes import health, predict
from service.runtime import Runtime

log = logging.getLogger("service")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Runtime]]:
        start = time.perf_counter()
        try:
            runtime = Runtime.load(settings, metrics)
            warm_s = runtime.warm_up()
        except ModelLoadError as exc:
            log.error("cannot start: %s", exc)
            raise
        await runtime.start()
        metrics.model_load_seconds.set(time.perf_counter() - start)
        metrics.ready.set(1)
        log.info(
            "model %s (%s) ready in %.2f s (warm-up %.2f s); limits %s",
            settings.model_path, runtime.classifier.model_id[:12], time.perf_counter() - start, warm_s,
            runtime.limits.as_dict(),
        )
        try:
            yield {"runtime": runtime}
        finally:
            metrics.ready.set(0)
            await runtime.stop()
            log.info("stopped after answering every admitted request")

    app = FastAPI(
        title="Cell classifier",
        summary="Binary image classification (seed CNN on ELPV solar cells) with onnxruntime",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.include_router(predict.router)
    app.include_router(health.router)
    install_error_handlers(app)
    # Last added runs first: metrics see every response, including 413s from the body limit.
    app.add_middleware(BodySizeLimit, max_body_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "X-API-Key"],
        )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


app = create_app()
