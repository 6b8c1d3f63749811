"""A real Ray cluster in this process: a head and a worker node on 127.0.0.1, small and quiet."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

# Before ray is imported, which reads them into constants. No usage report; and Ray otherwise swaps
# 127.0.0.1 for the host's routable address when a driver connects while every node listens on
# loopback only: this keeps all addresses on 127.0.0.1, as Ray does on a laptop.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
os.environ.update(RAY_ENV)

NO_RAY = "the ray extra is not installed: pip install -e '.[ray]'"

MB = 1024 * 1024
# Quiet, local and small: no usage report, no dashboard, 100 MB object stores (~40 kB per image call).
NODE_ARGS: dict[str, Any] = {
    "num_cpus": 2, "object_store_memory": 100 * MB, "node_ip_address": "127.0.0.1", "include_dashboard": False,
}
# A removed node is declared dead after 3 missed 1 s health checks instead of Ray's 5 x 3 s.
HEAD_SYSTEM_CONFIG = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LocalCluster:
    cluster: Any  # ray.cluster_utils.Cluster
    worker: Any  # ray._private.node.Node
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def ray_nodes() -> Iterator[LocalCluster]:
    """The two nodes with this process connected as the driver; no Serve (the offline jobs need none)."""
    ray = pytest.importorskip("ray", reason=NO_RAY)
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={**NODE_ARGS, "_system_config": HEAD_SYSTEM_CONFIG},
    )
    try:
        worker = cluster.add_node(**NODE_ARGS)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="warning", log_to_driver=False)
        yield LocalCluster(cluster, worker, 0)
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def ray_cluster(ray_nodes: LocalCluster) -> Iterator[LocalCluster]:
    """The two nodes with Ray Serve started, its HTTP proxy on the head only."""
    from ray import serve

    port = free_port()
    # The proxy on the head only: clients keep one address when the worker node goes away.
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
    try:
        yield LocalCluster(ray_nodes.cluster, ray_nodes.worker, port)
    finally:
        serve.shutdown()
