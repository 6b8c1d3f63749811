"""Settings, read from environment variables (upper-case field names) and validated at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MiB = 1024 * 1024


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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, env_file=None, frozen=True)

    # Model: metadata is read from the .json file beside the .onnx file.
    model_path: Path = Field(default_factory=default_model_path)
    # Versions: when set, MODEL_DIR/<n>/model.onnx with the highest n is served and MODEL_PATH is ignored.
    model_dir: Path | None = None
    model_poll_interval_s: float = Field(
        0.0, ge=0, description="how often MODEL_DIR is checked for a newer version; 0 = only on POST /admin/reload"
    )
    threshold: float | None = Field(
        None, ge=0, le=1, description="overrides the model card's decision threshold for every request"
    )

    # Server: this machine only unless asked; the Docker image sets HOST=0.0.0.0 (its port is published instead).
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    graceful_shutdown_s: float = Field(
        8.0, gt=0, description="time in-flight requests get after SIGTERM; under docker stop's 10 s"
    )

    # Upload limits: a phone photo is 3-12 MB, so 20 MB per file, 16 files, 64 MB per request.
    max_file_bytes: int = Field(20 * MiB, gt=0)
    max_body_bytes: int = Field(64 * MiB, gt=0)
    max_files: int = Field(16, ge=1)
    max_pixels: int = Field(
        0, ge=0, description="declared width x height; 0 = the largest RGBA PNG the decode budget fits, <= 64 M"
    )
    request_timeout_s: float = Field(30.0, gt=0, description="upload + inference; 408/503 after it")

    # Micro-batching: 0 ms wait batches only what queued while the previous batch ran.
    max_batch_size: int = Field(8, ge=1, le=256)
    max_batch_wait_ms: float = Field(0.0, ge=0, le=1000)
    max_queue_images: int = Field(64, ge=1, description="beyond this, 503 + Retry-After")
    retry_after_s: int = Field(1, ge=1)

    # Drift: served inputs against the training profile in the model card (GET /metrics).
    drift_window_images: int = Field(1000, ge=10, description="served images the drift metrics look back over")
    near_threshold_margin: float = Field(0.1, gt=0, lt=1, description="|p - threshold| counted as 'near'")

    # onnxruntime: 0 threads means the CPUs this container may use (cgroup quota and affinity).
    ort_intra_op_threads: int = Field(0, ge=0)
    ort_inter_op_threads: int = Field(1, ge=1)
    # Measured (BENCHMARKS.md): without the arena every batch maps and faults in its ~20 MB/image of
    # activations (a third of batch-8 throughput); its size is bounded by MAX_BATCH_SIZE. Spinning
    # helps the model alone but starves the decode threads on a small box: photo throughput halved.
    ort_cpu_mem_arena: bool = Field(True, description="reuse activation buffers between batches")
    ort_allow_spinning: bool = Field(False, description="intra-op threads spin between ops")
    decode_threads: int = Field(0, ge=0, description="0 means the available CPUs")

    # Decoding memory (issue 12; service/core/decode_memory.py): 0 = a share of the container's memory limit.
    decode_memory_budget_bytes: int = Field(0, ge=0, description="sum of admitted decode estimates; 0 = auto")
    decode_memory_wait_s: float = Field(
        2.0, ge=0, description="how long a decode may wait for budget (never past the request deadline), then 503"
    )

    # Engine and precision variant (service.core.engines): auto = OpenVINO when installed (faster alone and
    # for a lone request, BENCHMARKS.md), and the fastest variant this CPU runs natively whose held-out
    # accuracy (recorded in the card by `python -m training.variants`) is within 0.5 point of fp32.
    engine: Literal["auto", "onnxruntime", "openvino"] = "auto"
    precision: Literal["auto", "fp32", "int8", "bf16"] = "auto"
    # Test-time flips (training --tta): the card's flip-averaged file answers the mean over the four flips of
    # each image, at 4x the model's compute, so it is only ever served when asked for.
    flip_averaged: bool = Field(
        False, description="serve the card's flip-averaged variant (model.tta.onnx from training --tta)"
    )

    # Security: no CORS origin and no key unless configured.
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    api_key: SecretStr | None = None

    # Explanations (POST /explain): measured (BENCHMARKS.md) 82 copies cost 3-5 s on 2 shared cores, so
    # 100 copies (patch 20/stride 10 makes 81) stay well inside REQUEST_TIMEOUT_S even beside /predict load.
    explain_max_occlusions: int = Field(100, ge=1, le=10_000, description="occluded copies per explanation")
    # An explanation queues this many copies at a time (at most MAX_BATCH_SIZE), each chunk behind the
    # /predict images already waiting. Measured (BENCHMARKS.md): smaller chunks leave /predict more of the model.
    explain_chunk_images: int = Field(2, ge=1, le=256, description="occluded copies queued at a time")
    # The try-it page at GET / (same origin, so CORS stays closed); false answers 404 there.
    ui_enabled: bool = True

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        # "https://a.example,https://b.example" is easier to pass with -e than JSON.
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("api_key", "model_dir", "threshold", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @cached_property
    def session(self) -> SessionSettings:
        return SessionSettings(
            intra_op_threads=self.ort_intra_op_threads,
            inter_op_threads=self.ort_inter_op_threads,
            cpu_mem_arena=self.ort_cpu_mem_arena,
            allow_spinning=self.ort_allow_spinning,
        )
