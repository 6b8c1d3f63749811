"""Counts and times every HTTP response (pure ASGI, so it also sees the body limit's 413s)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core.metrics import Metrics


def _template_pattern(template: str) -> re.Pattern[str]:
    """`/v2/models/{name}/infer` -> a regex matching any one-segment value for each parameter."""
    return re.compile("^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)) + "$")


class MetricsMiddleware:
    """Labels each response with its route's template, so label cardinality stays bounded whatever paths
    clients send. The router records the route in the scope; a request refused before routing (the body
    limit's 413 from Content-Length) is matched against `route_templates()` (the app's documented paths,
    read once, on the first such request), so it counts under its real route."""

    def __init__(self, app: ASGIApp, metrics: Metrics, route_templates: Callable[[], Iterable[str]]) -> None:
        self.app = app
        self.metrics = metrics
        self._route_templates = route_templates
        self._patterns: list[tuple[re.Pattern[str], str]] | None = None

    def _route_of(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is not None:
            return getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched"
        if self._patterns is None:
            self._patterns = [(_template_pattern(t), t) for t in self._route_templates()]
        path = scope.get("path", "")
        return next((template for pattern, template in self._patterns if pattern.match(path)), "unmatched")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = self._route_of(scope)
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
