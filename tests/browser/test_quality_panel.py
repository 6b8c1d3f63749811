"""The page's verdict buttons and quality panel in a real chromium, against a real server scoring a version in
shadow: a verdict given on the page reaches /feedback, and the panel shows /quality's figures and gate."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.conftest import _started
from tests.browser.test_page import WAIT_MS, upload
from tests.reliability.conftest import Server, spawn_server
from tests.service.helpers import gray_png, wait_until
from tests.service.quality.test_shadow import add_flipped_version

pytestmark = pytest.mark.browser
KEY = "panel-key"
HEADERS = {"X-API-Key": KEY}


@pytest.fixture
def shadow_server(tiny_model_path: Path, tmp_path: Path) -> Iterator[Server]:
    versions = tmp_path / "versions"
    (versions / "1").mkdir(parents=True)
    shutil.copy(tiny_model_path, versions / "1" / "model.onnx")
    shutil.copy(tiny_model_path.with_suffix(".json"), versions / "1" / "model.json")
    started = _started(spawn_server(tiny_model_path, tmp_path / "server.log", MODEL_DIR=versions, API_KEY=KEY,
                                    DATA_DIR=tmp_path / "data", ROLLOUT="shadow"))
    add_flipped_version(versions, tiny_model_path)
    assert httpx.post(f"{started.base_url}/admin/reload", headers=HEADERS, timeout=30).json()["shadow"] == "2"
    yield started
    started.terminate()


def quality(server: Server) -> dict[str, Any]:
    return httpx.get(f"{server.base_url}/quality", headers=HEADERS, timeout=10).json()


def settled(server: Server) -> dict[str, Any]:
    """/quality once the shadow and the log have done what the last requests gave them."""
    last = None
    for _ in range(100):
        report = quality(server)
        now = (report["shadow"], report["log"]["written"], report["log"]["queued"])
        if now == last:
            return report
        last = now
        time.sleep(0.3)
    raise AssertionError("the shadow or the log kept working")


def test_a_verdict_given_on_the_page_shows_in_the_quality_panel_with_the_gate(
    shadow_server: Server, page: Any, tmp_path: Path
) -> None:
    server = shadow_server
    page.goto(server.base_url)
    page.get_by_label("API key").fill(KEY)
    page.get_by_label("API key").dispatch_event("change")
    page.locator("#quality-status", has_text="version 1 serves; 0 verdicts on it").wait_for(timeout=WAIT_MS)

    card = upload(page, tmp_path, "bright.png", gray_png(200))  # version 1: defective (version 2: functional)
    assert card.locator(".label").inner_text() == "defective"
    group = card.get_by_role("group", name="Is this label right?")
    group.get_by_role("button", name="Wrong").click()
    card.locator(".verdict-status", has_text="recorded: functional").wait_for(timeout=WAIT_MS)
    assert group.get_by_role("button", name="Wrong").get_attribute("aria-pressed") == "true"
    assert group.get_by_role("button", name="Right").get_attribute("aria-pressed") == "false"

    # The panel, refreshed by the verdict: version 1 judged once, wrong; its confusion matrix has the one cell.
    page.locator("#quality-status", has_text="version 1 serves; 1 verdicts on it").wait_for(timeout=WAIT_MS)
    versions = page.locator("#quality-versions table").first
    assert versions.locator("tbody tr").first.locator("td").all_inner_texts() == [
        "1", "served", "1", "0.0 %", "0.0 % – 79.3 %", "–"  # no positive judged: no recall
    ]
    confusion = page.locator("table.confusion[data-version='1']")
    assert confusion.locator("tbody tr", has_text="functional").locator("td").all_inner_texts() == [
        "functional", "0", "1"
    ]

    # A judged pair made through the API (the shadow version right): the panel's gate equals /quality's.
    settled(server)
    response = httpx.post(f"{server.base_url}/predict", files={"file": ("dark.png", gray_png(40), "image/png")},
                          headers=HEADERS, timeout=10)
    prediction = response.json()["predictions"][0]
    wait_until(lambda: settled(server)["shadow"]["scored"] >= 1, timeout_s=30)
    httpx.post(f"{server.base_url}/feedback", json={"id": prediction["id"], "label": "defective"}, headers=HEADERS,
               timeout=10).raise_for_status()
    gate = settled(server)["gate"]
    assert gate["shadow_only_correct"] >= 1
    expected = f"shadow {gate['shadow_only_correct']}, served {gate['served_only_correct']}"
    page.locator("#quality-gate dd", has_text=expected).wait_for(timeout=WAIT_MS)  # the 10 s refresh
    texts = page.locator("#quality-gate").inner_text()
    assert f"{gate['pairs']} of at least 200" in texts
    assert "wait (promote check, manual)" in texts
    assert gate["waiting_for"] in texts
    assert all("401" in message for message in page.console_errors)  # only the panel's look before the key


def test_with_the_log_off_the_panel_says_so_and_no_verdict_is_offered(
    tiny_model_path: Path, page: Any, tmp_path: Path
) -> None:
    server = _started(spawn_server(tiny_model_path, tmp_path / "off.log", API_KEY="", PREDICTION_LOG="false"))
    try:
        page.goto(server.base_url)
        page.locator("#quality-status", has_text="403: GET /quality needs the prediction log, which is off").wait_for(
            timeout=WAIT_MS)
        card = upload(page, tmp_path, "gray.png", gray_png(200))
        assert card.locator(".label").inner_text() == "defective"
        assert card.locator(".verdict").is_hidden()
    finally:
        server.terminate()
