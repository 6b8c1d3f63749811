"""`python -m service` / `serve`: uvicorn with the settings from the environment."""

from __future__ import annotations

import uvicorn

from service.config import Settings


def main() -> None:
    settings = Settings()
    uvicorn.run(
        "service.app:app",
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # One process: the model already uses every core through onnxruntime's threads.
        workers=1,
        timeout_graceful_shutdown=settings.graceful_shutdown_s,
        access_log=settings.log_level == "debug",
        server_header=False,
    )


if __name__ == "__main__":
    main()
