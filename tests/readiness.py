"""Waiting for a real server (a subprocess or a container) to answer GET /readyz with 200."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx


def wait_ready(url: str, exited: Callable[[], str | None], timeout_s: float, interval_s: float = 0.1) -> str | None:
    """None once `url`/readyz answers 200; otherwise why not: what `exited()` reports, or the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        why = exited()
        if why is not None:
            return why
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return None
        except httpx.TransportError:
            pass
        time.sleep(interval_s)
    return f"/readyz did not answer 200 within {timeout_s} s"
