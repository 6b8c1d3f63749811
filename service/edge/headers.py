"""Headers every answer carries, whichever route, middleware or error handler wrote it (added by
service.edge.middleware; Starlette's last-resort 500 carries them itself, service.edge.errors)."""

from __future__ import annotations

# Browsers must take each answer as the type it says (JSON stays JSON, a script stays a script), never guess
# another from its bytes: an error message that echoes input cannot then be read as HTML.
NOSNIFF = {"X-Content-Type-Options": "nosniff"}
ENCODED_HEADERS = [(name.lower().encode(), value.encode()) for name, value in NOSNIFF.items()]
