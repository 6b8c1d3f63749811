"""/docs in a real chromium with every other origin unreachable: Swagger UI comes from this service alone,
renders every operation under its CSP, and "Try it out" reaches the service."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.reliability.conftest import Server

pytestmark = pytest.mark.browser
WAIT_MS = 60_000


@pytest.fixture
def offline_page(browser: Any, server: Server) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.problems = []
    page.elsewhere = []
    page.on("console", lambda message: message.type == "error" and page.problems.append(message.text))
    page.on("pageerror", lambda error: page.problems.append(str(error)))
    own = urlsplit(server.base_url).netloc

    def route(request_route: Any) -> None:
        if urlsplit(request_route.request.url).netloc == own or request_route.request.url.startswith("data:"):
            request_route.continue_()
        else:  # as on a network without internet
            page.elsewhere.append(request_route.request.url)
            request_route.abort()

    context.route("**/*", route)
    yield page
    context.close()


def test_docs_render_every_operation_with_no_internet_and_no_csp_violation(server: Server, offline_page: Any) -> None:
    page = offline_page
    response = page.goto(f"{server.base_url}/docs")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    page.locator(".swagger-ui .info .title", has_text="Cell classifier").wait_for(timeout=WAIT_MS)
    page.locator(".opblock-summary-path", has_text="/v2/models/{name}/infer").first.wait_for(timeout=WAIT_MS)
    assert page.locator(".opblock").count() >= 15
    # Try it out: GET /healthz from the page itself.
    page.locator(".opblock-summary", has_text="/healthz").first.click()
    page.get_by_role("button", name="Try it out").click()
    page.get_by_role("button", name="Execute").click()
    page.locator(".live-responses-table .response-col_status", has_text="200").wait_for(timeout=WAIT_MS)
    assert page.elsewhere == []
    assert page.problems == []
