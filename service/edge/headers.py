"""Headers every answer carries, whichever route, middleware or error handler wrote it."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Browsers must take each answer as the type it says (JSON stays JSON, a script stays a script), never guess
# another from its bytes: an error message that echoes input cannot then be read as HTML.
NOSNIFF = {"X-Content-Type-Options": "nosniff"}
_ENCODED = [(name.lower().encode(), value.encode()) for name, value in NOSNIFF.items()]


class SecurityHeaders:
    """Pure ASGI, outermost of the app's middleware, so the body limit's 413s get the headers too. Answers
    that set a header themselves keep their value. Starlette's own last-resort 500 is sent outside every
    middleware; service.edge.errors adds the headers to it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                missing = [(name, value) for name, value in _ENCODED if name not in present]
                if missing:
                    message = {**message, "headers": [*message.get("headers", []), *missing]}
            await send(message)

        await self.app(scope, receive, with_headers)
