"""The service on a Ray cluster (Ray Serve): `serve run deploy/ray/serve-config.yaml`; needs `pip install '.[ray]'`.

Two deployments. `Ingress` serves the single-process service's own FastAPI app (`create_app`: the same
routes, upload limits, error table and metrics) over a `Pipeline` whose decode step runs here, with the
same preprocessing and limits, and whose predict step is `RemoteModel`: one call per preprocessed image
to the `Model` deployment, which gathers calls into batches (`@serve.batch`) for the same `Classifier`.
Either deployment autoscales on its own and may run on any node (docs/ray.md).

Nothing here reads the environment or loads a model at import: `build_app` (Ray's application builder)
reads `Settings` once and hands them to both deployments, which load in their replicas' constructors.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle
from starlette.types import Receive, Scope, Send

from service.core.assembly import load_classifier, model_source, version_name
from service.core.config import Settings
from service.core.failures import BusyError, OverloadedError
from service.core.metrics import Metrics
from service.core.model import serving_batch_sizes
from service.core.model_card import ModelCard
from service.core.pipeline import Pipeline
from service.core.predictor import Admission
from service.core.served import ServedModel
from service.edge.app import create_app


class ReplicaLostError(BusyError):
    """A model replica died with this request on it (its node went away); a retry reaches another one."""


class RaySettings(BaseModel):
    """The cluster part of the settings: the `args` of `build_app` in deploy/ray/serve-config.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Model replicas: each runs onnxruntime on `model_num_cpus` threads, so replicas sharing a node do
    # not oversubscribe it (onnxruntime would otherwise take every core of the node, service.core.cpu).
    model_min_replicas: int = Field(1, ge=0)
    model_max_replicas: int = Field(4, ge=1)
    model_num_cpus: float = Field(1.0, gt=0)
    # One call is one image: 8 in flight per replica is one full MAX_BATCH_SIZE batch, the size the
    # single-process service reaches under load; more means waiting, so a new replica helps.
    model_target_ongoing_requests: float = Field(8.0, gt=0)
    model_max_ongoing_requests: int = Field(16, ge=1, description="per replica; two batches")
    model_max_replicas_per_node: int | None = Field(None, ge=1)

    # Ingress replicas: HTTP, upload limits and decoding (`ingress_num_cpus` decode threads each).
    ingress_min_replicas: int = Field(1, ge=1)
    ingress_max_replicas: int = Field(2, ge=1)
    ingress_num_cpus: float = Field(1.0, gt=0)
    ingress_target_ongoing_requests: float = Field(4.0, gt=0)
    ingress_max_ongoing_requests: int = Field(32, ge=1)
    # Without it Ray may place every ingress replica on one node, which then takes the whole door with it.
    ingress_max_replicas_per_node: int | None = Field(None, ge=1)

    # Health checks: Ray calls each replica's check_health every period and replaces one that fails
    # or does not answer within the timeout (Ray's defaults).
    health_check_period_s: float = Field(10.0, gt=0)
    health_check_timeout_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _ranges(self) -> RaySettings:
        for role in ("model", "ingress"):
            low, high = getattr(self, f"{role}_min_replicas"), getattr(self, f"{role}_max_replicas")
            if low > high:
                raise ValueError(f"{role}_min_replicas ({low}) is above {role}_max_replicas ({high})")
        return self


def threads_for(num_cpus: float) -> int:
    """Threads for a replica given `num_cpus` of a node (at least one)."""
    return max(1, math.ceil(num_cpus))


@serve.deployment(name="Model")
class Model:
    """The same Classifier as `python -m service`, on preprocessed (100, 100, 1) arrays, batched by Ray."""

    def __init__(self, settings: Settings, threads: int) -> None:
        session = settings.session
        if not session.intra_op_threads:
            session = dataclasses.replace(session, intra_op_threads=threads)
        # MODEL_DIR's highest version or MODEL_PATH, as `python -m service` would serve; a newer version is
        # rolled out by redeploying the application (`serve deploy`), not by /admin/reload (docs/ray.md).
        self.source = model_source(settings)
        self.classifier = load_classifier(self.source, settings, session)
        self.classifier.warm_up(serving_batch_sizes(settings.max_batch_size))
        self.predict.set_max_batch_size(settings.max_batch_size)
        self.predict.set_batch_wait_timeout_s(settings.max_batch_wait_s)
        # One inference at a time, as in the single-process batcher: parallelism is inside onnxruntime.
        self._inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")

    def card(self) -> tuple[ModelCard, str, dict[str, object], str]:
        """The model card, the ONNX file's sha256, GET /model's body and the version, for the ingress."""
        version = version_name(self.source, self.classifier)
        return self.classifier.metadata, self.classifier.model_id, self.classifier.describe(), version

    # The decorator's values are replaced in __init__ from MAX_BATCH_SIZE and MAX_BATCH_WAIT_S.
    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.0)
    async def predict(self, images: list[np.ndarray]) -> list[float]:
        """One call per image; Ray hands this method every call queued meanwhile, up to the batch size."""
        loop = asyncio.get_running_loop()
        probabilities = await loop.run_in_executor(self._inference, self.classifier.predict, np.stack(images))
        return [float(p) for p in probabilities]

    async def check_health(self) -> None:
        """Fails (and Ray replaces the replica) if the session no longer gives a finite answer."""
        blank = np.zeros((1, 100, 100, 1), np.float32)
        # Queued behind the running batch, not beside it: still one inference at a time.
        result = await asyncio.get_running_loop().run_in_executor(self._inference, self.classifier.predict, blank)
        if not np.all(np.isfinite(result)):
            raise RuntimeError("the model returned a non-finite probability for a blank image")


class RemoteEngine:
    """How the Model replicas run it (engine, precision, threads), as they describe it; runs nothing here."""

    def __init__(self, runtime: dict[str, object]) -> None:
        self.name = str(runtime.get("engine", "unknown"))
        self.precision = str(runtime.get("precision", "unknown"))
        self._runtime = runtime

    def describe(self) -> dict[str, object]:
        return {"threads": None, **self._runtime}


class RemoteClassifier:
    """What the ingress needs of the model it does not load: the card (labels, threshold), its id and engine."""

    def __init__(self, metadata: ModelCard, model_id: str, description: dict[str, object]) -> None:
        self.metadata = metadata
        self.model_id = model_id
        self._description = description
        runtime = description.get("runtime")
        self.engine = RemoteEngine(runtime if isinstance(runtime, dict) else {})
        self.path = None

    def describe(self) -> dict[str, object]:
        return self._description

    def warm_up(self, batch_sizes: tuple[int, ...]) -> float:
        """Nothing to do here: every Model replica warms its own session before it takes requests."""
        return 0.0


class RemoteModel:
    """The ingress pipeline's predictor (`service.core.predictor.Predictor`): the Model deployment.

    Admission bounds nothing here: a handle queues at most `max_queued_requests` calls and refuses more with
    BackPressureError, answered as the single-process queue limit is (503 + Retry-After)."""

    def __init__(
        self, handle: DeploymentHandle, on_predicted: Callable[[int], None] | None = None
    ) -> None:
        self._handle = handle
        # images_predicted_total; batch sizes are the Model replicas' (Ray's serve_actual_batch_size).
        self._on_predicted = on_predicted
        self._sent = 0
        self.admission = Admission()

    @property
    def queued(self) -> int:
        """Images this ingress replica has sent and not yet got back."""
        return self._sent

    @property
    def on_decode_thread(self) -> None:
        """Decoded images are sent to the Model deployment, not run here."""
        return None

    def start(self) -> None:
        self.admission.open()

    async def stop(self) -> None:
        """Refuses new work; requests already admitted are answered (the ASGI server drains them first)."""
        self.admission.close()
        await self.admission.drained()

    async def predict(self, images: Sequence[np.ndarray]) -> list[float]:
        responses = [self._handle.predict.remote(x) for x in images]
        self._sent += len(responses)
        try:
            probabilities = list(await asyncio.gather(*responses))
        except BackPressureError as exc:
            raise OverloadedError(f"every model replica is busy ({exc})") from exc
        except (RayActorError, ReplicaUnavailableError) as exc:
            # The pipeline words it as every busy answer, with RETRY_AFTER_S.
            raise ReplicaLostError("a model replica was lost") from exc
        except asyncio.CancelledError:
            for response in responses:
                response.cancel()
            raise
        finally:
            self._sent -= len(responses)
        if self._on_predicted is not None:
            self._on_predicted(len(probabilities))
        return probabilities


@serve.deployment(name="Ingress")
@serve.ingress()
class Ingress:
    """`create_app` over a Pipeline that decodes here and predicts on the Model deployment."""

    async def __init__(self, settings: Settings, model: DeploymentHandle, decode_threads: int) -> None:
        metadata, model_id, description, version = await model.card.remote()
        # The ingress loads no model, so it has nothing to reload: /admin/reload answers 409 here. Nor does it log
        # predictions: each replica would keep a SQLite file of its own (docs/ray.md).
        settings = settings.model_copy(update={"model_dir": None, "prediction_log": False})
        self._settings = settings
        metrics = Metrics()
        served = ServedModel(
            RemoteClassifier(metadata, model_id, description),  # type: ignore[arg-type]
            version,
            RemoteModel(model, metrics.images.inc),
        )
        self.pipeline = Pipeline.load(settings, metrics, model=served, decode_threads=decode_threads)

    def __serve_build_asgi_app__(self) -> LifespanState:
        # Ray runs the app's lifespan (start, then stop on shutdown), as uvicorn does for `python -m service`.
        return LifespanState(create_app(self._settings, self.pipeline), lambda: self._serve_asgi_lifespan.state)

    def check_health(self) -> None:
        if not self.pipeline.ready:
            raise RuntimeError("the ingress pipeline is not accepting requests")


class LifespanState:
    """Hands the lifespan's state (the pipeline) to every request, as uvicorn does and Ray 2.60 does not:
    without it every route answers 503 "not loaded yet" (tests/ray). Anything else is the app's."""

    def __init__(self, app: FastAPI, lifespan_state: Callable[[], dict[str, Any]]) -> None:
        self.app = app
        self._lifespan_state = lifespan_state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope["state"] = dict(self._lifespan_state())
        await self.app(scope, receive, send)

    def __getattr__(self, name: str) -> Any:
        # Ray reads the routes and docs URL and adds its own exception handlers through the app.
        return getattr(self.app, name)


def app_for(settings: Settings, ray_settings: RaySettings) -> serve.Application:
    """The two deployments with their autoscaling, placement and health-check options."""
    health = {
        "health_check_period_s": ray_settings.health_check_period_s,
        "health_check_timeout_s": ray_settings.health_check_timeout_s,
        "graceful_shutdown_timeout_s": settings.graceful_shutdown_s,
    }
    model_options: dict[str, Any] = {
        "autoscaling_config": {
            "min_replicas": ray_settings.model_min_replicas,
            "max_replicas": ray_settings.model_max_replicas,
            "target_ongoing_requests": ray_settings.model_target_ongoing_requests,
        },
        "max_ongoing_requests": ray_settings.model_max_ongoing_requests,
        # The single-process queue limit, per ingress replica (each holds its own handle).
        "max_queued_requests": settings.max_queue_images,
        "ray_actor_options": {"num_cpus": ray_settings.model_num_cpus},
        **health,
    }
    if ray_settings.model_max_replicas_per_node is not None:
        model_options["max_replicas_per_node"] = ray_settings.model_max_replicas_per_node
    model = Model.options(**model_options).bind(settings, threads_for(ray_settings.model_num_cpus))
    ingress_options: dict[str, Any] = {}
    if ray_settings.ingress_max_replicas_per_node is not None:
        ingress_options["max_replicas_per_node"] = ray_settings.ingress_max_replicas_per_node
    ingress = Ingress.options(
        **ingress_options,
        autoscaling_config={
            "min_replicas": ray_settings.ingress_min_replicas,
            "max_replicas": ray_settings.ingress_max_replicas,
            "target_ongoing_requests": ray_settings.ingress_target_ongoing_requests,
        },
        max_ongoing_requests=ray_settings.ingress_max_ongoing_requests,
        ray_actor_options={"num_cpus": ray_settings.ingress_num_cpus},
        **health,
    )
    return ingress.bind(settings, model, threads_for(ray_settings.ingress_num_cpus))


def build_app(args: dict[str, Any]) -> serve.Application:
    """Ray's application builder (`import_path: service.entrypoints.ray_app:build_app`): the service's settings from
    the environment (runtime_env.env_vars), the cluster's from `args`."""
    return app_for(Settings(), RaySettings.model_validate(args))
