"""docs/page.png: the try-it page after one upload, in headless chromium against a real server.

    python -m tests.browser.screenshot IMAGE [--model models/model.onnx] [--out docs/page.png]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image
from playwright.sync_api import sync_playwright

from tests.browser.conftest import CHROMIUM
from tests.reliability.conftest import spawn_server


def shoot(browser: Any, base_url: str, image: Path, out: Path, width: int = 900) -> Path:
    """The page at `base_url` after one upload of `image`, as a 256-colour PNG at `out`."""
    page = browser.new_page(viewport={"width": width, "height": 800})
    try:
        page.goto(base_url)
        page.get_by_text("Probability of").wait_for()
        page.get_by_label("Images").set_input_files(str(image))
        page.locator("article.result[data-done='true']").wait_for(timeout=180_000)
        page.locator("#quality-gate dt").first.wait_for()  # the live quality panel has its figures
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=True)
    finally:
        page.close()
    # 256 colours are plenty for a page of text and two small images; a third of the bytes.
    with Image.open(out) as shot:
        shot.convert("RGB").quantize(256).save(out, optimize=True)
    return out


def take(model: Path, image: Path, out: Path, width: int = 900) -> Path:
    """`shoot` against a server of its own over `model`."""
    with tempfile.TemporaryDirectory() as tmp:
        server = spawn_server(model.resolve(), Path(tmp) / "server.log", REQUEST_TIMEOUT_S=120)
        try:
            server.wait_ready(120.0)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
                shoot(browser, server.base_url, image, out, width)
                browser.close()
        finally:
            server.terminate()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image", type=Path)
    parser.add_argument("--model", type=Path, default=Path("models/model.onnx"))
    parser.add_argument("--out", type=Path, default=Path("docs/page.png"))
    parser.add_argument("--width", type=int, default=900)
    args = parser.parse_args()
    print(f"wrote {take(args.model, args.image, args.out, args.width)}")


if __name__ == "__main__":
    main()
