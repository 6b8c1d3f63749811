"""bench.downscale: its 'shipped' variant is the service's preprocessing, and the others do what they claim."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bench.downscale import VARIANTS
from service.core.preprocessing import preprocess_bytes


def cell_with_a_crack() -> Image.Image:
    """A bright 300x300 cell with a 1-pixel dark vertical line, like a micro-crack."""
    pixels = np.full((300, 300), 200, np.uint8)
    pixels[:, 151] = 20
    return Image.fromarray(pixels, "L")


def test_the_shipped_variant_is_exactly_the_service_preprocessing() -> None:
    cell = cell_with_a_crack()
    png = io.BytesIO()
    cell.save(png, "PNG")

    ours = np.asarray(VARIANTS["bilinear (shipped)"](cell), np.float32)

    np.testing.assert_array_equal(ours, preprocess_bytes(png.getvalue())[:, :, 0])


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_gives_a_100x100_gray_image(name: str) -> None:
    out = VARIANTS[name](cell_with_a_crack())

    assert (out.size, out.mode) == ((100, 100), "L")


def test_the_min_filter_keeps_more_of_a_thin_crack_than_plain_bilinear() -> None:
    darkest = {name: int(np.asarray(VARIANTS[name](cell_with_a_crack())).min()) for name in VARIANTS}

    assert darkest["bilinear (shipped)"] > 120  # a third of its contrast kept: a faint line
    assert darkest["min-filter 3 + bilinear"] < 80  # two thirds of its contrast kept
