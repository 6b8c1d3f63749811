"""docs/page.png: the try-it page after one upload, in headless chromium against a real server.

    python -m tests.browser.screenshot IMAGE [--model models/model.onnx] [--out docs/page.png]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

from tests.browser.conftest import CHROMIUM
from tests.reliability.conftest import spawn_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image", type=Path)
    parser.add_argument("--model", type=Path, default=Path("models/model.onnx"))
    parser.add_argument("--out", type=Path, default=Path("docs/page.png"))
    parser.add_argument("--width", type=int, default=900)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = spawn_server(args.model.resolve(), Path(tmp) / "server.log", REQUEST_TIMEOUT_S=120)
        try:
            server.wait_ready(120.0)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
                page = browser.new_page(viewport={"width": args.width, "height": 800})
                page.goto(server.base_url)
                page.locator("#model-info dd").first.wait_for()
                page.get_by_label("Images").set_input_files(str(args.image))
                page.locator("article.result[data-done='true']").wait_for(timeout=180_000)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.out), full_page=True)
                browser.close()
        finally:
            server.terminate()
    # 256 colours are plenty for a page of text and two small images; a third of the bytes.
    with Image.open(args.out) as shot:
        shot.convert("RGB").quantize(256).save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
