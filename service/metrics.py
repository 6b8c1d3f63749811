"""Prometheus metrics, one registry per app so tests can build several apps in one process."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests_total", "HTTP requests by route, method and status",
            ["route", "method", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds", "Time from request start to response end",
            ["route"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.images = Counter(
            "images_predicted_total", "Images that got a prediction", registry=self.registry
        )
        self.batch_size = Histogram(
            "inference_batch_size", "Images per onnxruntime call", buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.rejected = Counter(
            "images_rejected_total", "Uploads refused, by reason", ["reason"], registry=self.registry
        )
        self.model_load_seconds = Gauge(
            "model_load_seconds", "Time to load, check and warm up the model", registry=self.registry
        )
        self.queue_depth = Gauge(
            "inference_queue_images", "Images waiting for inference", registry=self.registry
        )
        self.ready = Gauge("model_ready", "1 once the model is loaded and warmed", registry=self.registry)

    def observe_batch(self, size: int) -> None:
        self.batch_size.observe(size)
        self.images.inc(size)


def _route_of(scope: Scope) -> str:
    """The matched route's template (the router records it in the scope), so label cardinality stays
    bounded whatever paths clients send."""
    route = scope.get("route")
    return getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched"


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = _route_of(scope)
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
