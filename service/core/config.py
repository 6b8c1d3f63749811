"""Settings, read once from environment variables (upper-case field names) and validated at start-up.

`Settings` is the union of named groups, one class per concern, so each part of the service can be handed
the group it needs and docs/configuration.md (written by `python -m service.core.settings_reference`) lists
them group by group. One unit per kind of quantity: durations in seconds (`_S`), sizes in bytes (`_BYTES`),
counts in images, files or pixels. A setting the service can size itself takes `auto`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MiB = 1024 * 1024

# Settings whose meaning changed name or unit; an old name in the environment is refused with the new one.
RENAMED: dict[str, str] = {"MAX_BATCH_WAIT_MS": "MAX_BATCH_WAIT_S (seconds: 5 ms is 0.005)"}


def _auto(value: object) -> object:
    """`auto` (or empty, or the 0 that older deployments set) means: the service sizes it itself."""
    if value in ("auto", "AUTO", "", 0, "0"):
        return None
    return value


def default_data_dir() -> Path:
    """Where the service keeps what it writes (the prediction log): the user's data directory
    ($XDG_DATA_HOME, else ~/.local/share) under cell-classifier; the Docker image sets /var/lib/cell-classifier."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "cell-classifier"


def default_model_path() -> Path:
    """The shipped model where the package is installed (the repository, or /app in the image), so the server
    and the CLIs find it from any folder; a wheel installed elsewhere has none and start-up says to set MODEL_PATH."""
    return Path(__file__).resolve().parents[2] / "models" / "model.onnx"


@dataclass(frozen=True)
class SessionSettings:
    """The onnxruntime part of the settings: what `service.core.model` needs to build a session."""

    intra_op_threads: int = 0
    inter_op_threads: int = 1
    cpu_mem_arena: bool = True
    allow_spinning: bool = False


_CONFIG = SettingsConfigDict(case_sensitive=False, env_file=None, frozen=True)


class ModelSettings(BaseSettings):
    """Which model answers: the file or the versions folder, the engine and the variant it runs."""

    model_config = _CONFIG

    model_path: Path = Field(
        default_factory=default_model_path, description="the .onnx file served; its card (.json) sits beside it"
    )
    model_dir: Path | None = Field(
        None, description="versions: MODEL_DIR/<n>/model.onnx with the highest n is served; MODEL_PATH is ignored"
    )
    model_poll_interval_s: float = Field(
        0.0, ge=0, description="how often MODEL_DIR is checked for a newer version; 0 = only on POST /admin/reload"
    )
    threshold: float | None = Field(
        None, ge=0, le=1, description="overrides the model card's decision threshold for every request"
    )
    # auto = OpenVINO when installed (faster alone and for a lone request, BENCHMARKS.md), and the fastest
    # variant this CPU runs natively whose held-out accuracy (recorded in the card by `python -m
    # training.variants`) is within 0.5 point of fp32.
    engine: Literal["auto", "onnxruntime", "openvino"] = Field("auto", description="the inference engine")
    precision: Literal["auto", "fp32", "int8", "bf16"] = Field("auto", description="the card's variant served")
    # The card's flip-averaged file answers the mean over the four flips of each image, at 4x the model's
    # compute, so it is only ever served when asked for.
    flip_averaged: bool = Field(
        False, description="serve the card's flip-averaged variant (model.tta.onnx from training --tta)"
    )

    @field_validator("model_dir", "threshold", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value


class ServerSettings(BaseSettings):
    """Where the server listens, who may call it, and what it shows."""

    model_config = _CONFIG

    # This machine only unless asked; the Docker image sets HOST=0.0.0.0 (its port is published instead).
    host: str = Field("127.0.0.1", description="the interface the server listens on; 0.0.0.0 for every interface")
    port: int = Field(8000, ge=1, le=65535, description="the port the server listens on")
    # KServe's model server takes 8081 for gRPC beside 8080 for REST; 8081 beside PORT's 8000 here.
    grpc_enabled: bool = Field(True, description="serve the Open Inference Protocol over gRPC (and gRPC health)")
    grpc_port: int = Field(8081, ge=1, le=65535, description="the port the gRPC door listens on, on HOST")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="the service's and the HTTP server's log level; debug adds the access log"
    )
    graceful_shutdown_s: float = Field(
        8.0, gt=0, description="time in-flight requests get after SIGTERM; under docker stop's 10 s"
    )
    # Both keep the same limits, drain and start-up checks (service.entrypoints.server). Granian's HTTP I/O
    # runs in Rust threads, off the event loop: BENCHMARKS.md has the alternated runs.
    http_server: Literal["uvicorn", "granian"] = Field(
        "uvicorn",
        description="the HTTP server: uvicorn (uvloop, httptools) or granian (Rust HTTP I/O; the granian extra)",
    )
    api_key: SecretStr | None = Field(
        None, description="when set, /predict, /explain, /v2 infer, gRPC ModelInfer and /admin need it"
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated origins allowed by CORS; none by default"
    )
    ui_enabled: bool = Field(True, description="the try-it page at GET / (same origin); false answers 404 there")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        # "https://a.example,https://b.example" is easier to pass with -e than JSON.
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: object) -> object:
        return None if value == "" else value


class LimitSettings(BaseSettings):
    """What one request may send and how much work is admitted at once (beyond it: 413, 408 or 503)."""

    model_config = _CONFIG

    # A phone photo is 3-12 MB, so 20 MB per file, 16 files, 64 MB per request.
    max_file_bytes: int = Field(20 * MiB, gt=0, description="one uploaded file")
    max_body_bytes: int = Field(64 * MiB, gt=0, description="one request body")
    max_files: int = Field(16, ge=1, description="images in one request")
    max_pixels: int | None = Field(
        None, ge=1, description="declared width x height; auto = the largest RGBA PNG the decode budget fits, <= 64 M"
    )
    request_timeout_s: float = Field(30.0, gt=0, description="upload + inference; 408/503 after it")
    max_queue_images: int = Field(64, ge=1, description="images admitted and not yet answered; beyond, 503")
    retry_after_s: int = Field(1, ge=1, description="the Retry-After of every 503")
    # service/core/decode_memory.py: auto = a share of the container's memory limit (RELIABILITY.md).
    decode_memory_budget_bytes: int | None = Field(
        None, ge=1, description="sum of admitted decode estimates; auto = a share of the memory limit"
    )
    decode_memory_wait_s: float = Field(
        2.0, ge=0, description="how long a decode may wait for budget (never past the request deadline), then 503"
    )
    # A 12 MP JPEG estimates 53 MB (decoded at 1/8 scale), a 64 MP PNG 423 MB: photos stay in the common lane.
    large_image_bytes: int = Field(
        100 * 1000 * 1000, ge=1, description="estimated decode memory over which an image decodes in the large lane"
    )

    auto_limits = field_validator("max_pixels", "decode_memory_budget_bytes", mode="before")(_auto)


class BatchingSettings(BaseSettings):
    """How images reach the engine: one at a time on the thread that decoded them, or batched."""

    model_config = _CONFIG

    request_path: Literal["auto", "direct", "batched"] = Field(
        "auto", description="auto = batched only when the served model's batches measure BATCHING_MIN_GAIN at load"
    )
    batching_min_gain: float = Field(
        1.25, gt=0, description="a batch's images/s over single images' (measured at load) at which auto batches"
    )

    max_batch_size: int = Field(8, ge=1, le=256, description="images run by the engine at once")
    # 0 s batches only what queued while the previous batch ran.
    max_batch_wait_s: float = Field(0.0, ge=0, le=1, description="how long a batch waits to fill")


class ThreadSettings(BaseSettings):
    """Threads: the engine's and the decoders'. auto = the CPUs this container may use (quota and affinity)."""

    model_config = _CONFIG

    ort_intra_op_threads: int | None = Field(None, ge=1, description="onnxruntime's threads per run; auto")
    ort_inter_op_threads: int = Field(1, ge=1, description="onnxruntime's parallel graph branches")
    # Measured (BENCHMARKS.md): without the arena every batch maps and faults in its ~20 MB/image of
    # activations (a third of batch-8 throughput); its size is bounded by MAX_BATCH_SIZE. Spinning
    # helps the model alone but starves the decode threads on a small box: photo throughput halved.
    ort_cpu_mem_arena: bool = Field(True, description="reuse activation buffers between batches")
    ort_allow_spinning: bool = Field(False, description="intra-op threads spin between ops")
    decode_threads: int | None = Field(
        None, ge=1, description="threads decoding uploads (and, on the direct path, running them); auto: 2 per CPU"
    )
    large_lane_threads: int = Field(1, ge=1, description="threads decoding images over LARGE_IMAGE_BYTES")

    auto_threads = field_validator("ort_intra_op_threads", "decode_threads", mode="before")(_auto)


class DriftSettings(BaseSettings):
    """Served inputs against the training profile in the model card (GET /metrics)."""

    model_config = _CONFIG

    drift_window_images: int = Field(1000, ge=10, description="served images the drift metrics look back over")
    near_threshold_margin: float = Field(0.1, gt=0, lt=1, description="|p - threshold| counted as 'near'")


class ExplainSettings(BaseSettings):
    """Occlusion maps at POST /explain."""

    model_config = _CONFIG

    # Measured (BENCHMARKS.md): 82 copies cost 3-5 s on 2 shared cores, so 100 copies (patch 20/stride 10
    # makes 81) stay well inside REQUEST_TIMEOUT_S even beside /predict load.
    explain_max_occlusions: int = Field(100, ge=1, le=10_000, description="occluded copies per explanation")
    # Each chunk queues behind the /predict images already waiting. Measured (BENCHMARKS.md): smaller
    # chunks leave /predict more of the model.
    explain_chunk_images: int = Field(2, ge=1, le=256, description="occluded copies queued at a time")


class QualitySettings(BaseSettings):
    """Live quality (docs/quality.md): the prediction log, verdicts at POST /feedback, shadow rollout."""

    model_config = _CONFIG

    prediction_log: bool = Field(True, description="log every prediction (id, version, answer, image sha256 and size)")
    data_dir: Path = Field(
        default_factory=default_data_dir, description="where the SQLite prediction log is kept (predictions.sqlite3)"
    )
    prediction_log_url: SecretStr | None = Field(
        None, description="a database for the log instead of the SQLite file: postgresql+psycopg://user:pw@host/db"
    )
    # Rows wait here for the writer thread; beyond it they are dropped and counted, never waited for. At
    # ~300 bytes a row, 10,000 rows are ~3 MB, minutes of full-speed traffic on 2 cores.
    prediction_log_queue: int = Field(10_000, ge=1, description="rows waiting to be written; beyond, dropped")
    # A row is ~400 bytes in the spool (JSON), so 256 MiB hold ~650,000 rows: about an hour of a busy
    # replica's answers (RELIABILITY.md), on a disk the store's outage does not fill.
    prediction_log_spool_bytes: int = Field(
        256 * MiB, ge=0, description="rows the store did not take wait on local disk up to this; 0 = no spool"
    )
    prediction_log_spool_dir: Path | None = Field(
        None, description="where the spool file is kept; unset = DATA_DIR (better: another disk than the log)"
    )
    prediction_log_images: bool = Field(False, description="also keep each image's bytes in the log")
    prediction_log_retention_s: float = Field(
        30 * 24 * 3600.0, ge=0, description="predictions and verdicts older than this are deleted; 0 keeps all"
    )
    quality_window: int = Field(500, ge=1, description="the last verdicts per version the quality figures cover")
    # Another replica's writer commits within LINGER_S (50 ms) of its answer while its store is up.
    feedback_wait_s: float = Field(
        2.0, ge=0, le=60, description="how long a verdict for an id not in the log yet waits for it, then 404"
    )
    rollout: Literal["replace", "shadow"] = Field(
        "replace", description="a new version replaces the served one, or is scored in shadow until promoted"
    )
    shadow_sample: float = Field(1.0, ge=0, le=1, description="share of live images offered to the shadow version")
    # Small, so the shadow only ever takes the CPU that served requests leave: a full queue skips images.
    shadow_queue: int = Field(8, ge=1, description="images waiting for the shadow version; beyond, skipped")
    # The loop from verdicts to a better model (docs/feedback-loop.md).
    promote: Literal["manual", "auto"] = Field(
        "manual", description="auto: the shadow version serves as soon as the promotion gate passes"
    )
    rollback: Literal["manual", "auto"] = Field(
        "manual", description="auto: a promoted version found worse than the previous one (in shadow) is rolled back"
    )
    gate_alpha: float = Field(
        0.05, gt=0, lt=0.5, description="the gate's error rate: a version no better is promoted at most this often"
    )
    # A promotion on a dozen verdicts is not one anyone should sign, whatever the test says: 200 judged pairs
    # put about 55 positives under the recall guard at ELPV's 27 % defective.
    gate_min_pairs: int = Field(200, ge=1, description="judged images both versions answered before the gate acts")
    gate_interval_s: float = Field(
        60.0, gt=0, description="the gate also looks this often (verdicts sent to other replicas, image expiry)"
    )
    # 34 KiB PNG cells at 100 requests/s are ~290 GB a day: the bytes are kept only while a verdict may come.
    prediction_log_unjudged_image_s: float = Field(
        3 * 24 * 3600.0, ge=0, description="an image's bytes without a verdict are dropped after this; 0 keeps them"
    )

    @model_validator(mode="after")
    def _auto_needs_shadow(self) -> QualitySettings:
        for name, value in (("PROMOTE", self.promote), ("ROLLBACK", self.rollback)):
            if value == "auto" and (self.rollout != "shadow" or not self.prediction_log):
                raise ValueError(
                    f"{name}=auto decides on verdicts of versions scored side by side: set ROLLOUT=shadow and "
                    f"PREDICTION_LOG=true (and MODEL_DIR), or {name}=manual"
                )
        return self

    @field_validator("prediction_log_spool_dir", mode="before")
    @classmethod
    def _auto_folder(cls, value: object) -> object:
        return None if value in ("", "auto") else value

    @field_validator("prediction_log_url", mode="before")
    @classmethod
    def _psycopg_url(cls, value: object) -> object:
        if value == "":
            return None
        # SQLAlchemy's plain postgresql:// means psycopg2, which is not installed: the postgres extra is psycopg 3.
        if isinstance(value, str) and value.startswith(("postgresql://", "postgres://")):
            return "postgresql+psycopg://" + value.split("://", 1)[1]
        return value


GROUPS: tuple[type[BaseSettings], ...] = (
    ModelSettings, ServerSettings, LimitSettings, BatchingSettings, ThreadSettings, DriftSettings, ExplainSettings,
    QualitySettings,
)


class Settings(
    ModelSettings, ServerSettings, LimitSettings, BatchingSettings, ThreadSettings, DriftSettings, ExplainSettings,
    QualitySettings,
):
    """Every setting of the service, group by group (GROUPS); read once by an entry point and passed down."""

    model_config = _CONFIG

    @model_validator(mode="before")
    @classmethod
    def _refuse_renamed(cls, data: Any) -> Any:

        for old, new in RENAMED.items():
            if old in os.environ:
                raise ValueError(f"{old} is no longer read: set {new} instead")
        return data

    @cached_property
    def session(self) -> SessionSettings:
        return SessionSettings(
            intra_op_threads=self.ort_intra_op_threads or 0,
            inter_op_threads=self.ort_inter_op_threads,
            cpu_mem_arena=self.ort_cpu_mem_arena,
            allow_spinning=self.ort_allow_spinning,
        )
