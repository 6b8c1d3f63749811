"""The service's one ASGI middleware: common headers, HTTP metrics and the body limit on every answer.

One pure ASGI layer instead of three: each wrapped `send` (and `receive`) is a coroutine per message on the
event loop, and at 16 connections the loop, not the engine, was the bottleneck (py-spy; BENCHMARKS.md). Outermost
of the app's middleware, so the body limit's 413s and CORS answers get the headers and are counted too.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core.failures import PayloadTooLargeError
from service.core.metrics import Metrics
from service.edge.errors import error_key_for, protocol_for, status_for
from service.edge.headers import ENCODED_HEADERS


class InFlight:
    """HTTP requests being served now, so the lifespan's shutdown can wait for them before it stops the
    pipeline. uvicorn already waits for them before the lifespan ends; Granian's embedded server starts the
    lifespan's shutdown as soon as it stops accepting, while requests admitted earlier may still be uploading."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def drained(self, timeout_s: float) -> bool:
        """True when no request is in flight, waiting up to timeout_s for the last to end."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True


class BodyTooLargeError(Exception):
    """Raised inside the app's receive; the middleware answers it (the body is over MAX_BODY_BYTES)."""


def _template_pattern(template: str) -> re.Pattern[str]:
    """`/v2/models/{name}/infer` -> a regex matching any one-segment value for each parameter."""
    return re.compile("^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)) + "$")


def _with_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The common headers added where the answer did not set them itself (it keeps its own value)."""
    present = {name.lower() for name, _ in headers}
    missing = [(name, value) for name, value in ENCODED_HEADERS if name not in present]
    return [*headers, *missing] if missing else headers


class EdgeMiddleware:
    """Per HTTP request:
    - headers: X-Content-Type-Options: nosniff on every answer (service.edge.headers). Starlette's own
      last-resort 500 is sent outside every middleware; service.edge.errors adds the headers to it.
    - metrics: each response counted and timed under its route's template, so label cardinality stays
      bounded whatever paths clients send. The router records the route in the scope; a request refused before
      routing (the 413 from Content-Length) is matched against `route_templates()` (the app's documented
      paths, read once, on the first such request).
    - body limit: MAX_BODY_BYTES enforced while the body streams in (Content-Length can be absent), so a
      too-large upload is refused before it is buffered anywhere. `refusal` wraps the 413 (CORS, when on, so
      browsers can read it)."""

    def __init__(
        self, app: ASGIApp, *, metrics: Metrics, route_templates: Callable[[], Iterable[str]], max_body_bytes: int,
        refusal: Callable[[ASGIApp], ASGIApp] = lambda app: app, in_flight: InFlight | None = None,
    ) -> None:
        self.app = app
        self.in_flight = in_flight or InFlight()
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self._route_templates = route_templates
        self._patterns: list[tuple[re.Pattern[str], str]] | None = None
        self._refuse = refusal(self._too_large)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        started = False

        async def edge_send(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message["headers"] = _with_headers(list(message.get("headers", ())))
            await send(message)

        received = 0
        limit = self.max_body_bytes
        self.in_flight.enter()

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError
            return message

        try:
            declared = _content_length(scope)
            if declared is not None and declared > limit:
                await self._refuse(scope, receive, edge_send)
                return
            try:
                await self.app(scope, limited_receive, edge_send)
            except BodyTooLargeError:
                if not started:
                    await self._refuse(scope, receive, edge_send)
        finally:
            self.in_flight.leave()
            route = self._route_of(scope)
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)

    def _route_of(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is not None:
            return getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched"
        if self._patterns is None:
            self._patterns = [(_template_pattern(t), t) for t in self._route_templates()]
        path = scope.get("path", "")
        return next((template for pattern, template in self._patterns if pattern.match(path)), "unmatched")

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The 413 in the path's protocol, closing the connection (the rest of the body is not read)."""
        path = scope.get("path", "")
        error = PayloadTooLargeError(f"the request body is larger than {self.max_body_bytes} bytes")
        body = json.dumps({error_key_for(path): str(error)}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status_for(error, protocol_for(path)),
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None
