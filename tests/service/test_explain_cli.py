"""`explain IMAGE... --out DIR`: the PNGs offline, without a server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from service.core.explain_render import SCALE, figure_size
from service.entrypoints.explain_cli import main
from tests.docs.figures import differs, refresh
from tests.service.helpers import gray_png

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_explain_writes_one_png_per_image(
    tiny_model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = []
    for level in (40, 200):
        path = tmp_path / f"cell{level}.png"
        path.write_bytes(gray_png(level, (120, 80)))
        images.append(path)
    out = tmp_path / "out"
    code = main([*map(str, images), "--out", str(out), "--model", str(tiny_model_path), "--scale", "2"])
    assert code == 0
    for path in images:
        with Image.open(out / f"{path.stem}.explain.png") as png:
            assert png.size == figure_size(2)
    printed = capsys.readouterr().out
    assert "cell40.png: functional" in printed
    assert "cell200.png: defective" in printed


def test_explain_reports_a_bad_image_and_goes_on(
    tiny_model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    good = tmp_path / "good.png"
    good.write_bytes(gray_png(100))
    code = main([str(bad), str(good), "--out", str(tmp_path), "--model", str(tiny_model_path)])
    assert code == 1
    assert "bad.png: the bytes are not a decodable image" in capsys.readouterr().err
    assert (tmp_path / "good.explain.png").is_file()


def test_explain_refuses_a_missing_model_and_bad_grid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["x.png", "--out", str(tmp_path), "--model", str(tmp_path / "none.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["x.png", "--out", str(tmp_path), "--patch", "0"]) == 2
    assert "patch is 0 px" in capsys.readouterr().err


def test_explain_honours_the_servers_settings(
    tiny_model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    image = tmp_path / "cell200.png"
    image.write_bytes(gray_png(200, (120, 80)))
    monkeypatch.setenv("MODEL_PATH", str(tiny_model_path))  # no --model: the server's MODEL_PATH
    monkeypatch.setenv("THRESHOLD", "0.9999")  # so high that the same image is labelled negative
    assert main([str(image), "--out", str(tmp_path / "out")]) == 0
    assert "cell200.png: functional" in capsys.readouterr().out


def test_explain_finds_the_shipped_model_from_any_folder(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    (tmp_path / "cell.png").write_bytes(gray_png(120))
    completed = subprocess.run(
        [sys.executable, "-m", "service.entrypoints.explain_cli", "cell.png", "--out", "maps"],
        cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(repo)},
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert (tmp_path / "maps" / "cell.explain.png").is_file()


def test_the_documented_map_is_the_current_rendering(tmp_path: Path) -> None:
    """docs/explain-cell0470.png: ELPV cell 470 through the shipped model, rewritten when the rendering changes
    (commit it); docs/explanations.md states its size."""
    pytest.importorskip("elpv_dataset", reason="the picture shows a real cell: make samples installs the data set")
    from training.samples import elpv_data_folder

    cell = elpv_data_folder() / "images" / "cell0470.png"
    assert main([str(cell), "--out", str(tmp_path)]) == 0
    rendered = tmp_path / "cell0470.explain.png"
    refresh(rendered, DOCS / "explain-cell0470.png")
    assert not differs(rendered, DOCS / "explain-cell0470.png")
    width, height = figure_size(SCALE)
    assert f"upscaled {SCALE}× ({width}×{height} px)" in (DOCS / "explanations.md").read_text()
