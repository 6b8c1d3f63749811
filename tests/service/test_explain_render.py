"""The explanation PNG: size, colours from matplotlib's colormap, the overlay where the evidence is."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.core import colormap
from service.core.explain import Explanation, OcclusionGrid
from service.core.explain_render import _LEFT, _TOP, figure_size, input_png, render_png


def explanation_with_one_hot_cell(row: int, column: int, label: str = "defective") -> Explanation:
    grid = OcclusionGrid()
    probabilities = np.full(grid.positions, 0.9)
    probabilities[row * grid.columns + column] = 0.2  # hiding this patch drops p from 0.9 to 0.2
    image = np.full((100, 100, 1), 200.0, np.float32)
    return Explanation.from_probabilities(image, grid, 0.9, probabilities.tolist(), 0.5, ("functional", label))


def test_the_colormap_is_matplotlibs() -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is in the dev extra")
    assert colormap.from_matplotlib() == colormap.COLORS
    assert len(colormap.COLORS) == 256


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_the_png_has_the_documented_size(scale: int) -> None:
    png = render_png(explanation_with_one_hot_cell(2, 3), 0.5, scale)
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"
        assert image.size == figure_size(scale)


def test_the_strongest_cell_is_red_and_an_unaffected_one_is_white_over_gray() -> None:
    explanation = explanation_with_one_hot_cell(7, 1)
    assert explanation.strongest == (7, 1)
    with Image.open(io.BytesIO(render_png(explanation, 0.5))) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=int)
    # Centre of patch (7, 1): input pixels x 10-29, y 70-89; (row 7, column 1) alone covers x 20, y 80.
    red = rgb[_TOP + 4 * 80 + 2, _LEFT + 4 * 20 + 2]
    far = rgb[_TOP + 4 * 10, _LEFT + 4 * 80]
    assert red[0] > red[2] + 25  # dark red (the colormap's top) blended over gray 200
    # Where occlusion changes nothing, the colormap's middle (near white) blends with gray 200: still gray.
    assert np.ptp(far) < 12


def test_input_png_is_the_input_pixel_for_pixel() -> None:
    image = np.arange(100 * 100, dtype=np.float32).reshape(100, 100, 1) % 256
    with Image.open(io.BytesIO(input_png(image))) as png:
        assert png.mode == "L"
        np.testing.assert_array_equal(np.asarray(png, dtype=np.float32), image[:, :, 0])
