"""Counts and times every HTTP response (pure ASGI, so it also sees the body limit's 413s)."""

from __future__ import annotations

import re
import time
import weakref

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import Metrics


def _route_of(scope: Scope) -> str:
    """The matched route's template, so label cardinality stays bounded whatever paths clients send. The
    router records it in the scope; a request refused before routing (the body limit's 413 from
    Content-Length) is matched here against the app's routes, so it counts under its real route."""
    route = scope.get("route")
    if route is None:
        return _matching_route(scope) or "unmatched"
    return getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched"


_PATHS_OF: weakref.WeakKeyDictionary[object, tuple[tuple[re.Pattern[str], str], ...]] = weakref.WeakKeyDictionary()


def _documented_paths(app: object) -> tuple[tuple[re.Pattern[str], str], ...]:
    """(regex, template) for every path in the app's OpenAPI schema; built once per app."""
    if app not in _PATHS_OF:
        schema = app.openapi()  # type: ignore[attr-defined]
        _PATHS_OF[app] = tuple(
            (re.compile("^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(path)) + "$"), path)
            for path in schema.get("paths", {})
        )
    return _PATHS_OF[app]


def _matching_route(scope: Scope) -> str | None:
    """The template of the documented path this request was sent to, for requests refused before routing."""
    app = scope.get("app")
    if app is None or not hasattr(app, "openapi"):
        return None
    path = scope.get("path", "")
    return next((template for pattern, template in _documented_paths(app) if pattern.match(path)), None)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

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
            route = _route_of(scope)
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
