"""preprocess_bytes without HTTP: one tensor per picture, whatever the container format."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from service.core.preprocessing import (
    ALPHA_BACKGROUND,
    INPUT_SIZE,
    JPEG_DRAFT_MIN_SIDE,
    RESIZE_FILTER,
    ImageTooLargeError,
    UndecodableImageError,
    UnsupportedImageFormatError,
    open_image,
    preprocess_bytes,
    preprocess_image,
)
from tests.conftest import image_bytes
from tests.service.helpers import gradient, gray_png, png_claiming

EXIF_ORIENTATION = 0x0112


def reference_tensor(image: Image.Image) -> np.ndarray:
    """The documented recipe done by hand: 8-bit gray, bilinear resize to 100x100, raw 0-255 float32."""
    resized = image.convert("L").resize(INPUT_SIZE, Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)[:, :, np.newaxis]


@pytest.mark.parametrize("size", [(1, 1), (7, 300), (300, 7), (100, 100), (640, 480)])
@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "1"])
def test_preprocess_bytes_returns_a_100x100x1_float32_tensor_of_raw_gray_levels(
    size: tuple[int, int], mode: str
) -> None:
    x = preprocess_bytes(image_bytes(gradient(size, mode), "PNG"))
    assert x.shape == (100, 100, 1)
    assert x.dtype == np.float32
    assert 0.0 <= x.min() <= x.max() <= 255.0


def test_preprocess_bytes_keeps_raw_pixel_values_rather_than_rescaling() -> None:
    assert np.all(preprocess_bytes(gray_png(200)) == 200.0)


def test_preprocess_bytes_resizes_with_the_pinned_bilinear_filter() -> None:
    image = gradient((333, 217))
    assert RESIZE_FILTER == Image.Resampling.BILINEAR
    np.testing.assert_array_equal(preprocess_bytes(image_bytes(image, "PNG")), reference_tensor(image))


def test_preprocess_bytes_converts_color_with_itu_601_luma() -> None:
    color = (200, 40, 90)
    expected = round(0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2])
    x = preprocess_bytes(image_bytes(Image.new("RGB", (20, 20), color), "PNG"))
    assert np.all(np.abs(x - expected) <= 1)


@pytest.mark.parametrize(
    ("fmt", "save_args"),
    [("BMP", {}), ("GIF", {}), ("TIFF", {}), ("WEBP", {"lossless": True}), ("PNG", {"optimize": True})],
)
def test_lossless_formats_give_the_same_tensor_as_png(fmt: str, save_args: dict[str, object]) -> None:
    image = gradient()
    np.testing.assert_array_equal(
        preprocess_bytes(image_bytes(image, fmt, **save_args)), preprocess_bytes(image_bytes(image, "PNG"))
    )


def test_jpeg_gives_nearly_the_same_tensor_as_png() -> None:
    image = gradient((160, 96))
    jpeg = preprocess_bytes(image_bytes(image, "JPEG", quality=95))
    assert np.abs(jpeg - preprocess_bytes(image_bytes(image, "PNG"))).max() <= 4


def test_large_jpeg_is_decoded_at_reduced_scale_yet_matches_a_full_decode() -> None:
    data = image_bytes(gradient((1600, 1200), "RGB"), "JPEG", quality=90)
    with Image.open(io.BytesIO(data)) as full:
        full.load()
        expected = reference_tensor(full)
    with Image.open(io.BytesIO(data)) as image:
        x = preprocess_image(image)
        # The DCT-domain draft really happened, no smaller than the documented side ...
        assert image.size < (1600, 1200)
        assert min(image.size) >= JPEG_DRAFT_MIN_SIDE
    # ... and cost almost nothing in accuracy.
    difference = np.abs(x - expected)
    assert difference.mean() < 1.0
    assert difference.max() <= 6


def test_a_colour_jpeg_is_decoded_to_luma_within_one_gray_level_of_its_colour_decode() -> None:
    """libjpeg's luma (no chroma upsampled or converted) against Pillow's "L" of the RGB decode at the same draft:
    the same ITU-R 601-2 weights, so only rounding differs."""
    rng = np.random.default_rng(3)
    colours = Image.fromarray(rng.integers(0, 256, (600, 800, 3), np.uint8)).resize((1600, 1200))
    data = image_bytes(colours, "JPEG", quality=90)
    with Image.open(io.BytesIO(data)) as image:
        x = preprocess_image(image)
        assert image.mode == "L"  # decoded as luma, not converted after an RGB decode
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (JPEG_DRAFT_MIN_SIDE, JPEG_DRAFT_MIN_SIDE))
        expected = np.asarray(image.convert("L").resize((100, 100), Image.Resampling.BILINEAR), np.float32)
    assert np.abs(x[:, :, 0] - expected).max() <= 1


@pytest.mark.parametrize(("level", "gray"), [(0, 0), (257, 1), (32768, 128), (65535, 255)])
def test_16_bit_png_is_scaled_to_8_bits_not_clipped(level: int, gray: int) -> None:
    data = image_bytes(Image.fromarray(np.full((20, 30), level, np.uint16)), "PNG")
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode.startswith("I")  # really 16-bit on disk
    assert np.all(preprocess_bytes(data) == gray)


def test_16_bit_tiff_is_scaled_to_8_bits_not_clipped() -> None:
    data = image_bytes(Image.fromarray(np.full((20, 30), 32768, np.uint16)), "TIFF")
    assert np.all(preprocess_bytes(data) == 128)


def test_palette_png_gives_the_gray_of_its_palette_colours() -> None:
    rgb = Image.new("RGB", (40, 40), (30, 160, 220))
    rgb.paste((250, 250, 10), (0, 0, 20, 40))
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    np.testing.assert_array_equal(preprocess_bytes(image_bytes(palette, "PNG")), reference_tensor(rgb))


@pytest.mark.parametrize(("alpha", "gray"), [(0, ALPHA_BACKGROUND), (255, 255), (128, 128)])
def test_rgba_png_is_flattened_onto_the_alpha_background(alpha: int, gray: int) -> None:
    x = preprocess_bytes(image_bytes(Image.new("RGBA", (20, 20), (255, 255, 255, alpha)), "PNG"))
    assert np.all(np.abs(x - gray) <= 1)


def test_transparent_palette_index_is_flattened_onto_the_alpha_background() -> None:
    image = Image.new("P", (20, 20), 0)
    image.putpalette([255, 255, 255] * 256)
    assert np.all(preprocess_bytes(image_bytes(image, "PNG", transparency=0)) == ALPHA_BACKGROUND)


def test_gray_with_alpha_is_flattened_onto_the_alpha_background() -> None:
    x = preprocess_bytes(image_bytes(Image.new("LA", (20, 20), (255, 0)), "PNG"))
    assert np.all(x == ALPHA_BACKGROUND)


@pytest.mark.parametrize("fmt", ["GIF", "TIFF"])
def test_multi_frame_images_use_the_first_frame(fmt: str) -> None:
    dark, bright = Image.new("L", (30, 30), 20), Image.new("L", (30, 30), 230)
    data = image_bytes(dark, fmt, save_all=True, append_images=[bright])
    with Image.open(io.BytesIO(data)) as image:
        assert image.n_frames == 2
    assert np.all(preprocess_bytes(data) == 20)


def test_cmyk_jpeg_is_converted_like_its_rgb_original() -> None:
    rgb = gradient((96, 64), "RGB")
    data = image_bytes(rgb.convert("CMYK"), "JPEG", quality=95)
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == "CMYK"
    assert np.abs(preprocess_bytes(data) - reference_tensor(rgb)).max() <= 4


@pytest.mark.parametrize(
    ("orientation", "transpose"), [(6, Image.Transpose.ROTATE_270), (8, Image.Transpose.ROTATE_90)]
)
def test_exif_orientation_is_applied_before_resizing(orientation: int, transpose: Image.Transpose) -> None:
    stored = gradient((160, 96))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    tagged = preprocess_bytes(image_bytes(stored, "JPEG", quality=95, exif=exif))
    upright = preprocess_bytes(image_bytes(stored.transpose(transpose), "JPEG", quality=95))
    untagged = preprocess_bytes(image_bytes(stored, "JPEG", quality=95))
    assert np.abs(tagged - upright).max() <= 4
    # The ramp runs across the stored image and down the displayed one: ignoring the tag shows.
    assert np.abs(tagged - untagged).max() > 100


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\x00", "not a decodable image"),
        (b"GIF89a is not enough", "corrupt|not a decodable image"),
        (np.random.default_rng(0).bytes(4096), "not a decodable image"),
        (b"just some text in a file called cell.png", "not a decodable image"),
        (gray_png(100, (64, 64))[:70], "truncated or corrupt"),
        (png_claiming(20, 20), "truncated or corrupt"),
    ],
    ids=["empty", "one-byte", "gif-magic-only", "random", "text", "truncated-png", "png-without-pixels"],
)
def test_preprocess_bytes_rejects_undecodable_bytes(data: bytes, message: str) -> None:
    with pytest.raises(UndecodableImageError, match=message):
        preprocess_bytes(data)


@pytest.mark.parametrize("fmt", ["ICO", "PPM", "TGA", "PCX"])
def test_preprocess_bytes_rejects_real_images_in_unsupported_formats(fmt: str) -> None:
    data = image_bytes(Image.new("RGB", (32, 32), (10, 20, 30)), fmt)
    with pytest.raises(UnsupportedImageFormatError, match=f"format {fmt} is not supported; send one of BMP"):
        preprocess_bytes(data)


@pytest.mark.parametrize(("width", "height"), [(100_000, 100_000), (10_000, 10_000), (64_001, 1_000)])
def test_open_image_refuses_declared_pixel_bombs_from_the_header_alone(width: int, height: int) -> None:
    start = time.thread_time()
    with pytest.raises(ImageTooLargeError, match="pixels"):
        open_image(png_claiming(width, height))
    assert time.thread_time() - start < 0.5


def test_open_image_honours_a_lower_pixel_limit() -> None:
    with pytest.raises(ImageTooLargeError, match=r"20x20 = 400 pixels; the limit is 399"):
        preprocess_bytes(gray_png(10, (20, 20)), max_pixels=399)
    assert preprocess_bytes(gray_png(10, (20, 20)), max_pixels=400).shape == (100, 100, 1)
