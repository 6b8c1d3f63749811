"""Request body limit, enforced while the body streams in (Content-Length can be absent or lie)."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core.failures import PayloadTooLargeError
from service.edge.errors import error_key_for, protocol_for, status_for


class BodyTooLargeError(Exception):
    """Raised inside the app's receive; the middleware answers it (the body is over MAX_BODY_BYTES)."""


class BodySizeLimit:
    """Pure ASGI, so a too-large upload is refused before it is buffered anywhere."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._refuse(scope, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLargeError
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLargeError:
            if not started:
                await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
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
