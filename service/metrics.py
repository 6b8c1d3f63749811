"""Prometheus metrics, one registry per app so tests can build several apps in one process.

The HTTP series are recorded by `service.metrics_middleware` at the edge; the rest by the pipeline."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
        self.model_info = Gauge(
            "model_info", "1 for the engine and precision variant that answer", ["engine", "precision"],
            registry=self.registry,
        )

    def observe_batch(self, size: int) -> None:
        self.batch_size.observe(size)
        self.images.inc(size)
