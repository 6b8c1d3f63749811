"""The FastAPI application (the HTTP edge): `create_app(settings)`, served by `python -m service`.

Nothing here runs at import: the settings are read once by the caller and the model is loaded once,
either by `python -m service` before uvicorn starts (so a bad model is one line and a non-zero exit)
or, when no pipeline is handed in (tests), by the lifespan.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from service.core.config import Settings
from service.core.metrics import Metrics
from service.core.model import ModelLoadError
from service.core.pipeline import Pipeline
from service.edge.errors import install_error_handlers
from service.edge.grpc.door import GrpcDoor
from service.edge.middleware import EdgeMiddleware, InFlight
from service.edge.routes import admin, docs, explain, health, page, predict, quality
from service.edge.routes.v2 import routes as v2

log = logging.getLogger("service")
EVERY_INTERFACE = frozenset({"0.0.0.0", "::", ""})


def create_app(
    settings: Settings, pipeline: Pipeline | None = None, *, warm_up_s: float | None = None,
    grpc_door: GrpcDoor | None = None,
) -> FastAPI:
    """The app over `pipeline` (loaded, not yet started), or over one its lifespan loads from `settings`.
    `warm_up_s`: the caller already warmed `pipeline` up in that many seconds; None: the lifespan does.
    `grpc_door`: served beside HTTP over the same pipeline, started and stopped by the lifespan (`python -m
    service` hands one in when GRPC_ENABLED; tests and the Ray ingress serve HTTP only)."""
    metrics = pipeline.metrics if pipeline is not None else Metrics()
    in_flight = InFlight()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Pipeline]]:
        start = time.perf_counter()
        try:
            serving = pipeline if pipeline is not None else Pipeline.load(settings, metrics)
            warm_s = serving.warm_up() if warm_up_s is None else warm_up_s
        except ModelLoadError as exc:
            log.error("cannot start: %s", exc)
            raise
        await serving.start()
        metrics.model_load_seconds.set(time.perf_counter() - start)
        # What exists now (the app, the model, the libraries: ~90k objects) lives as long as the process:
        # frozen, the collector stops re-scanning it: a full collection over it paused the event loop for
        # ~33 ms about once per 2,000 requests (gc.callbacks, in process); frozen, 1.2 ms. Collected first (one
        # such pause, at start-up), so garbage left by loading and warm-up is freed rather than frozen for good.
        gc.collect()
        gc.freeze()
        served = serving.classifier.engine.describe()
        card = serving.classifier.metadata
        log.info(
            "model %s (%s%s) ready in %.2f s (warm-up %.2f s) on %s %s, %s threads; probability = p(%s), "
            "threshold %s; request path %s; limits %s",
            serving.classifier.path or settings.model_path, serving.classifier.model_id[:12],
            ", flip-averaged: 4 flips per image" if card.flip_averaged else "",
            time.perf_counter() - start, warm_s,
            served["engine"], served["precision"], served["threads"], card.positive, serving.threshold(),
            serving.model.describe_path(), serving.limits.as_dict(),
        )
        if settings.host in EVERY_INTERFACE and settings.api_key is None:
            ports = f"{settings.port}" + (f" or {settings.grpc_port} (gRPC)" if grpc_door is not None else "")
            log.warning(
                "listening on every interface (HOST=%s) without an API key: anyone who can reach port %s can "
                "use the model; set API_KEY, or HOST=127.0.0.1 to serve this machine only",
                settings.host, ports,
            )
        try:
            if grpc_door is not None:
                await grpc_door.start(serving, app.version)
            yield {"pipeline": serving}
        finally:
            if grpc_door is not None:
                await grpc_door.stop()  # before the pipeline: its calls in flight are answered first
            # Requests still in flight (an upload under way) are admitted and answered before the pipeline stops.
            if not await in_flight.drained(settings.graceful_shutdown_s):
                log.warning("%d requests still in flight after GRACEFUL_SHUTDOWN_S", in_flight.count)
            await serving.stop()
            log.info("stopped after answering every admitted request")

    app = FastAPI(
        title="Cell classifier",
        summary="Binary image classification (seed CNN on ELPV solar cells) with onnxruntime",
        version="0.1.0",
        lifespan=lifespan,
        # Served by service.edge.routes.docs from an installed package instead of a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.include_router(predict.router)
    app.include_router(health.router)
    app.include_router(admin.router)
    app.include_router(v2.router)
    app.include_router(explain.router)
    app.include_router(quality.router)
    docs.install(app)
    if settings.ui_enabled:
        page.install(app)
    install_error_handlers(app)
    cors = (
        partial(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                allow_headers=["Content-Type", "X-API-Key"])
        if settings.cors_origins else None
    )
    if cors is not None:
        app.add_middleware(cors.func, **cors.keywords)
    # Last added runs first: the service's one middleware sees every answer, CORS's and the body limit's 413
    # (sent through CORS too, so browsers can read it).
    app.add_middleware(
        EdgeMiddleware, metrics=metrics, route_templates=lambda: app.openapi()["paths"],
        max_body_bytes=settings.max_body_bytes, refusal=cors or (lambda inner: inner), in_flight=in_flight,
    )
    return app
