"""Prometheus metrics, one registry per app so tests can build several apps in one process.

The HTTP series are recorded by `service.edge.middleware` at the edge, the gRPC ones by the gRPC door
(`service.edge.grpc.servicer`); the rest by the pipeline."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service.core.input_stats import STATISTICS, DriftMonitor, ImageSummary

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
        # Labelled by the protocol's method names and gRPC's code names: both sets are fixed, so bounded.
        self.grpc_requests = Counter(
            "grpc_requests_total", "gRPC calls by method and status code", ["method", "code"], registry=self.registry,
        )
        self.grpc_latency = Histogram(
            "grpc_request_duration_seconds", "Time from a gRPC call's start to its answer",
            ["method"], buckets=LATENCY_BUCKETS, registry=self.registry,
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
        self.served_version = Gauge(
            "model_version_served", "1 for the model version that answers new requests", ["version"],
            registry=self.registry,
        )
        self.reloads = Counter(
            "model_reloads_total", "Newer versions swapped in or refused", ["outcome"], registry=self.registry
        )
        self.poll_errors = Counter(
            "model_poll_errors_total", "Version poller ticks that failed other than by a refused version "
            "(logged once per distinct error; polling goes on)", registry=self.registry,
        )

        self.input_mean_gray = Histogram(
            "input_mean_gray_level", "Mean gray level of each served model input",
            buckets=tuple(range(16, 257, 16)), registry=self.registry,
        )
        self.input_contrast = Histogram(
            "input_contrast", "Standard deviation of the gray levels of each served model input",
            buckets=tuple(range(8, 129, 8)), registry=self.registry,
        )
        self.drift_psi = Gauge(
            "input_drift_psi", "Population stability index of served inputs against the training profile "
            "(NaN without a profile)", ["statistic"], registry=self.registry,
        )
        self.near_threshold = Gauge(
            "predictions_near_threshold_ratio", "Share of recent predictions within NEAR_THRESHOLD_MARGIN of "
            "the threshold", registry=self.registry,
        )
        self.drift_window = Gauge(
            "input_drift_window_images", "Served images the drift metrics currently cover", registry=self.registry
        )

        # Explanations (POST /explain): their occluded copies also pass through the predictor, so they are in
        # images_predicted_total and inference_batch_size too; these series tell them apart.
        self.explanations = Counter(
            "explanations_total", "Occlusion maps computed", registry=self.registry
        )
        self.explanation_images = Counter(
            "explanation_images_total", "Occluded copies classified for explanations", registry=self.registry
        )
        self.explanation_seconds = Histogram(
            "explanation_duration_seconds", "Time to classify all occluded copies of one explanation",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )

        # Live quality (service.core.quality): the prediction log, verdicts from POST /feedback, shadow scoring.
        self.log_rows = Counter(
            "prediction_log_rows_total", "Prediction rows written to the prediction log", registry=self.registry
        )
        self.log_dropped = Counter(
            "prediction_log_dropped_total", "Prediction rows not written: queue_full (the store is slower than "
            "traffic), spool_full (the spool holds PREDICTION_LOG_SPOOL_BYTES), spool_error (the spool's disk failed "
            "too) or store_error (the store failed and there is no spool)", ["reason"], registry=self.registry,
        )
        self.log_queue = Gauge(
            "prediction_log_queue_rows", "Prediction rows waiting for the log's writer", registry=self.registry
        )
        self.log_spool_rows = Gauge(
            "prediction_log_spool_rows", "Prediction rows waiting in the spool for the store to answer again",
            registry=self.registry,
        )
        self.log_spool_bytes = Gauge(
            "prediction_log_spool_bytes", "Bytes of the rows waiting in the spool (bound: PREDICTION_LOG_SPOOL_BYTES)",
            registry=self.registry,
        )
        self.log_spool_since = Gauge(
            "prediction_log_spool_oldest_timestamp_seconds", "Unix time the oldest row waiting in the spool was "
            "spooled; 0 when none waits", registry=self.registry,
        )
        self.feedback = Counter(
            "feedback_total", "Verdicts received by POST /feedback, by the served version they judge and whether "
            "its answer was correct", ["version", "outcome"], registry=self.registry,
        )
        self.accuracy = Gauge(
            "quality_accuracy", "Share of correct answers over the version's last QUALITY_WINDOW verdicts",
            ["version"], registry=self.registry,
        )
        self.precision = Gauge(
            "quality_precision", "Precision for the positive class over the version's last QUALITY_WINDOW verdicts "
            "(NaN while it predicted no positive)", ["version"], registry=self.registry,
        )
        self.recall = Gauge(
            "quality_recall", "Recall for the positive class over the version's last QUALITY_WINDOW verdicts "
            "(NaN while no positive was judged)", ["version"], registry=self.registry,
        )
        self.verdicts = Gauge(
            "quality_verdicts", "Verdicts the quality gauges of the version cover", ["version"], registry=self.registry
        )
        self.shadow_images = Counter(
            "shadow_images_total", "Live images offered to the shadow version: scored, skipped (no spare capacity) "
            "or failed", ["outcome"], registry=self.registry,
        )
        self.shadow_version = Gauge(
            "model_version_shadow", "1 for the version scored in shadow (ROLLOUT=shadow)", ["version"],
            registry=self.registry,
        )
        self.rollout_decisions = Counter(
            "rollout_decisions_total", "Promotions and rollbacks (action), decided by the gate or an operator",
            ["action", "decided_by"], registry=self.registry,
        )
        self.gate_evidence = Gauge(
            "gate_evidence", "The promotion gate's evidence E for its check (promote, rollback); it acts at "
            "1/GATE_ALPHA (rollback: 2/GATE_ALPHA)", ["check"], registry=self.registry,
        )
        self.gate_pairs = Gauge(
            "gate_pairs", "Judged images both the served and the shadow version answered, since the last decision",
            registry=self.registry,
        )

    def watch_drift(self, monitor: DriftMonitor) -> None:
        """The drift gauges read the monitor when scraped, so serving a request computes no index."""
        for statistic in STATISTICS:
            self.drift_psi.labels(statistic).set_function(lambda s=statistic: monitor.psi(s))
        self.near_threshold.set_function(monitor.near_threshold_share)
        self.drift_window.set_function(lambda: monitor.images)

    def observe_inputs(self, summaries: Iterable[ImageSummary]) -> None:
        for summary in summaries:
            self.input_mean_gray.observe(summary.mean_gray)
            self.input_contrast.observe(summary.contrast)

    def observe_batch(self, size: int) -> None:
        self.batch_size.observe(size)
        self.images.inc(size)

    def observe_explanation(self, occluded: int, seconds: float) -> None:
        self.explanations.inc()
        self.explanation_images.inc(occluded)
        self.explanation_seconds.observe(seconds)
