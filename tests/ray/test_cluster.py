"""The Ray Serve application on a real two-node cluster: same answers as `python -m service`, replicas on
both nodes, and requests still answered when the worker node is lost without warning."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from service.core.config import Settings
from service.edge.app import create_app
from tests.ray.conftest import NO_RAY, LocalCluster

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]
ray = pytest.importorskip("ray", reason=NO_RAY)
from ray import serve  # noqa: E402

from service.entrypoints.ray_app import RaySettings, app_for  # noqa: E402

APP = "cells"
# Two of each, one per CPU-half, so both nodes hold an ingress and a model replica.
TWO_OF_EACH = RaySettings(
    model_min_replicas=2, model_max_replicas=2, model_num_cpus=0.5, model_max_replicas_per_node=1,
    ingress_min_replicas=2, ingress_max_replicas=2, ingress_num_cpus=0.5, ingress_max_replicas_per_node=1,
    health_check_period_s=2, health_check_timeout_s=5,
)


@pytest.fixture(scope="module")
def settings(tiny_model_path: Path) -> Settings:
    return Settings(model_path=tiny_model_path, max_files=2, retry_after_s=1, graceful_shutdown_s=2)


@pytest.fixture(scope="module")
def deployed(ray_cluster: LocalCluster, settings: Settings) -> Iterator[LocalCluster]:
    serve.run(app_for(settings, TWO_OF_EACH), name=APP, route_prefix="/", blocking=False)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{ray_cluster.base_url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    else:
        pytest.fail(f"the Ray application did not answer /readyz within 90 s: {serve.status()}")
    yield ray_cluster
    serve.delete(APP)


@pytest.fixture(scope="module")
def single_process(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def replica_nodes(deployment: str) -> set[str]:
    """The node ids of a deployment's live replica actors."""
    nodes = set()
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["name"].startswith(f"SERVE_REPLICA::{APP}#{deployment}#"):
            handle = ray.get_actor(actor["name"], namespace=actor["namespace"])
            nodes.add(ray.get(handle.__ray_call__.remote(lambda _: ray.get_runtime_context().get_node_id())))
    return nodes


@pytest.mark.parametrize(
    ("content_type", "make_body"),
    [
        ("image/png", lambda png: png),
        ("image/png", lambda png: png[: len(png) // 2]),
        ("application/pdf", lambda png: png),
    ],
    ids=["png", "truncated-png", "unsupported-type"],
)
def test_ray_answers_like_the_single_process_service(
    deployed: LocalCluster, single_process: TestClient, png_bytes: bytes, content_type: str, make_body: object,
) -> None:
    body = make_body(png_bytes)  # type: ignore[operator]
    headers = {"Content-Type": content_type}
    expected = single_process.post("/predict", content=body, headers=headers)
    got = httpx.post(f"{deployed.base_url}/predict", content=body, headers=headers, timeout=30)
    assert (got.status_code, without_ids(got.json())) == (expected.status_code, without_ids(expected.json()))


def without_ids(answer: dict) -> dict:
    """Every prediction has an id of its own (a UUID): equal answers differ only there."""
    for prediction in answer.get("predictions", []):
        assert len(prediction.pop("id")) == 36
    return answer


def test_ray_applies_the_same_upload_limits(
    deployed: LocalCluster, single_process: TestClient, png_bytes: bytes
) -> None:
    files = [("files", (f"{i}.png", png_bytes, "image/png")) for i in range(3)]
    expected = single_process.post("/predict", files=files)
    got = httpx.post(f"{deployed.base_url}/predict", files=files, timeout=30)
    assert (got.status_code, got.json()) == (422, expected.json())
    assert "at most 2" in got.json()["detail"]


def test_ray_serves_the_model_card_and_metrics(deployed: LocalCluster, single_process: TestClient) -> None:
    on_ray = httpx.get(f"{deployed.base_url}/model", timeout=10).json()
    alone = single_process.get("/model").json()
    # The ingress decodes; the Model deployment runs the model, so the ingress has no request path of its own.
    assert on_ray.pop("request_path") is None
    assert alone.pop("request_path")["path"] in ("direct", "batched")
    assert on_ray == alone
    metrics = httpx.get(f"{deployed.base_url}/metrics", timeout=10).text
    assert "http_requests_total" in metrics
    assert "model_ready 1.0" in metrics
    # One ingress replica's registry answers; which one is Ray's choice, so its count may still be 0.
    assert re.search(r"^images_predicted_total \d", metrics, re.MULTILINE), metrics


def test_replicas_run_on_both_nodes(deployed: LocalCluster) -> None:
    head = deployed.cluster.head_node.node_id
    both = {head, deployed.worker.node_id}
    assert replica_nodes("Model") == both
    assert replica_nodes("Ingress") == both


@dataclass
class Load:
    """Clients that post one image after another; each retries once on a 5xx, as docs/ray.md advises."""

    url: str
    body: bytes
    clients: int = 4
    stop: threading.Event = field(default_factory=threading.Event)
    # (time answered, first status, final status); 0 stands for a connection error.
    results: list[tuple[float, int, int]] = field(default_factory=list)

    def _post(self, client: httpx.Client) -> int:
        try:
            return client.post("/predict", content=self.body, headers={"Content-Type": "image/png"}).status_code
        except httpx.TransportError:
            return 0

    def _client(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stop.is_set():
                first = final = self._post(client)
                if first == 0 or first >= 500:
                    final = self._post(client)
                self.results.append((time.monotonic(), first, final))

    def __enter__(self) -> Load:
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


def test_requests_are_answered_after_the_worker_node_is_lost(deployed: LocalCluster, png_bytes: bytes) -> None:
    with Load(deployed.base_url, png_bytes) as load:
        time.sleep(3)
        lost_at = time.monotonic()
        deployed.cluster.remove_node(deployed.worker, allow_graceful=False)
        time.sleep(10)
    after = [r for r in load.results if r[0] > lost_at]
    retried = [r for r in load.results if r[1] != 200]
    failed = [r for r in load.results if r[2] != 200]
    summary = f"{len(load.results)} requests, {len(after)} after the loss, {len(retried)} retried, failed: {failed}"
    assert not failed, summary
    assert len(after) >= 20, summary
    assert httpx.get(f"{deployed.base_url}/readyz", timeout=10).status_code == 200
    print(summary)
