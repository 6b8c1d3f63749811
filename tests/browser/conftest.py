"""A real chromium (Debian's, driven by Playwright) against a real `python -m service` on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.conftest import Server, spawn_server

# Playwright's own browser download cannot work on this network; Debian's package is what `make test` installs.
CHROMIUM = Path("/usr/bin/chromium")


def _chromium_or_skip() -> Path:
    if not CHROMIUM.is_file():
        pytest.skip(f"no chromium at {CHROMIUM}: as root, `apt-get install chromium` (make test does it)")
    return CHROMIUM


# Module scope, not session: Playwright's sync API keeps an event loop running in this thread while it is
# started, and later tests that call asyncio.run() fail with "cannot be called from a running event loop".
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = _chromium_or_skip()
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(executable), headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("browser")


def _started(server: Server) -> Server:
    try:
        server.wait_ready(90.0)
    except BaseException:
        server.process.kill()
        server.process.wait()
        raise
    return server


@pytest.fixture(scope="module")
def server(tiny_model_path: Path, module_tmp: Path) -> Iterator[Server]:
    """The service over the tiny model, no API key, CORS closed (the defaults)."""
    started = _started(spawn_server(tiny_model_path, module_tmp / "server.log", API_KEY="",
                                    DATA_DIR=module_tmp / "server-data"))
    yield started
    started.terminate()


@pytest.fixture(scope="module")
def keyed_server(tiny_model_path: Path, module_tmp: Path) -> Iterator[Server]:
    started = _started(spawn_server(tiny_model_path, module_tmp / "keyed.log", API_KEY="page-test-key",
                                    DATA_DIR=module_tmp / "keyed-data"))
    yield started
    started.terminate()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page; `page.console_errors` collects what chromium reports as errors."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.console_errors = []
    page.on("console", lambda message: message.type == "error" and page.console_errors.append(message.text))
    page.on("pageerror", lambda error: page.console_errors.append(str(error)))
    yield page
    context.close()
