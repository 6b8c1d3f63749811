"""The Ray Serve pieces without a cluster: settings, and how the remote predict step fails."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from service.core.config import Settings
from service.core.failures import BusyError
from service.core.metrics import Metrics
from tests.ray.conftest import NO_RAY

pytest.importorskip("ray", reason=NO_RAY)
from ray.exceptions import ActorDiedError
from ray.serve.exceptions import BackPressureError

from service.core.decode_memory import decode_limits
from service.core.model import Classifier
from service.core.pipeline import Pipeline
from service.core.served import ServedModel
from service.entrypoints.ray_app import RaySettings, RemoteClassifier, RemoteModel, ReplicaLostError


class FakeResponse:
    """A DeploymentResponse stand-in: awaiting it gives `outcome()`; it records cancellation."""

    def __init__(self, outcome: Callable[[], float]) -> None:
        self._outcome = outcome
        self.cancelled = False

    def __await__(self):  # type: ignore[no-untyped-def]
        yield from asyncio.sleep(0).__await__()
        return self._outcome()

    def cancel(self) -> None:
        self.cancelled = True


class FakeHandle:
    def __init__(self, outcome: Callable[[], float]) -> None:
        self.calls = 0
        self._outcome = outcome
        self.predict = self
        self.responses: list[FakeResponse] = []

    def remote(self, x: np.ndarray) -> FakeResponse:
        self.calls += 1
        self.responses.append(FakeResponse(self._outcome))
        return self.responses[-1]


def raising(exc: Exception) -> Callable[[], float]:
    def outcome() -> float:
        raise exc

    return outcome


def pipeline_over(handle: FakeHandle, tiny_model_path: Path) -> Pipeline:
    settings = Settings(model_path=tiny_model_path, retry_after_s=3)
    classifier = Classifier.load(settings.model_path, settings.session)
    remote = RemoteClassifier(classifier.metadata, classifier.model_id, classifier.describe())
    metrics = Metrics()
    model = RemoteModel(handle, metrics.images.inc)  # type: ignore[arg-type]
    served = ServedModel(remote, "1", model)  # type: ignore[arg-type]
    limits = decode_limits(settings.decode_memory_budget_bytes, settings.max_pixels, None)
    return Pipeline(settings, metrics, served, ThreadPoolExecutor(1), limits)


def images(n: int) -> list[np.ndarray]:
    return [np.zeros((100, 100, 1), np.float32)] * n


async def predict(pipeline: Pipeline, n: int) -> list[float]:
    await pipeline.start()
    try:
        return (await pipeline.answer_arrays(images(n), pipeline.deadline())).probabilities
    finally:
        await pipeline.stop()


def test_remote_predict_sends_one_call_per_image(tiny_model_path: Path) -> None:
    handle = FakeHandle(lambda: 0.25)
    pipeline = pipeline_over(handle, tiny_model_path)
    assert asyncio.run(predict(pipeline, 3)) == [0.25, 0.25, 0.25]
    assert handle.calls == 3
    assert pipeline.metrics.images._value.get() == 3


def test_backpressure_is_the_same_busy_answer_as_a_full_queue(tiny_model_path: Path) -> None:
    pipeline = pipeline_over(FakeHandle(raising(BackPressureError(64, 64))), tiny_model_path)
    with pytest.raises(BusyError, match=r"busy: overloaded \(every model replica is busy.*retry after 3 s"):
        asyncio.run(predict(pipeline, 2))
    assert pipeline.metrics.rejected.labels("overloaded")._value.get() == 1


def test_a_lost_replica_is_a_retryable_busy_answer(tiny_model_path: Path) -> None:
    pipeline = pipeline_over(FakeHandle(raising(ActorDiedError())), tiny_model_path)
    with pytest.raises(ReplicaLostError, match="a model replica was lost; retry after 3 s"):
        asyncio.run(predict(pipeline, 1))
    assert pipeline.metrics.images._value.get() == 0


def test_a_request_past_its_deadline_cancels_its_remote_calls(tiny_model_path: Path) -> None:
    handle = FakeHandle(lambda: 0.5)
    pipeline = pipeline_over(handle, tiny_model_path)

    async def late() -> None:
        await pipeline.start()
        try:
            await pipeline.answer_arrays(images(2), asyncio.get_running_loop().time() - 1)
        finally:
            await pipeline.stop()

    with pytest.raises(BusyError, match="inference did not finish in time"):
        asyncio.run(late())
    assert all(response.cancelled for response in handle.responses)


def test_the_remote_model_refuses_work_once_stopped(tiny_model_path: Path) -> None:
    handle = FakeHandle(lambda: 0.5)
    pipeline = pipeline_over(handle, tiny_model_path)
    asyncio.run(predict(pipeline, 1))
    assert not pipeline.ready
    with pytest.raises(BusyError, match="shutting down"):
        asyncio.run(pipeline.answer_arrays(images(1), float("inf")))


def test_ray_settings_refuse_a_replica_range_upside_down() -> None:
    with pytest.raises(ValidationError, match=r"model_min_replicas \(5\) is above model_max_replicas \(2\)"):
        RaySettings(model_min_replicas=5, model_max_replicas=2)


def test_ray_settings_refuse_unknown_keys() -> None:
    with pytest.raises(ValidationError, match="model_replicas"):
        RaySettings.model_validate({"model_replicas": 2})


def test_the_shipped_serve_config_args_are_valid_ray_settings() -> None:
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "deploy/ray/serve-config.yaml").read_text())
    (app,) = config["applications"]
    assert app["import_path"] == "service.entrypoints.ray_app:build_app"
    RaySettings.model_validate(app["args"])
    Settings.model_validate({key.lower(): value for key, value in app["runtime_env"]["env_vars"].items()
                             if key.lower() in Settings.model_fields})
