"""Joining a Ray cluster, for every command that runs on one (`predict --ray`, `train --cv ... --ray`)."""

from __future__ import annotations


def connect(address: str | None) -> bool:
    """Joins the cluster at `address` (None: RAY_ADDRESS, the one started on this machine, else a new local one);
    True when this call started the connection (and so ends it). Ray is imported here only: it is an extra."""
    import ray

    if ray.is_initialized():
        return False
    ray.init(address=address, logging_level="warning")
    return True
