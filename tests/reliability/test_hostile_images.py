"""preprocess_bytes on hostile input: a (100, 100, 1) float32 array in 0..255, or ImageError; nothing else, no hang."""

from __future__ import annotations

import io
import tracemalloc
import warnings
from unittest import mock

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from service.core import preprocessing
from service.core.preprocessing import (
    ImageError,
    ImageTooLargeError,
    UndecodableImageError,
    preprocess_bytes,
)
from tests.reliability.samples import bombs, png_declaring, valid_images, zero_size_images
from tests.reliability.strategies import fuzz_settings, headers_and_noise, hostile_files, mutated_files

# Pillow warns (UserWarning) about the corrupt TIFF tags the mutations make; the outcome is what is checked.
pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore::UserWarning")]


def assert_model_input_or_image_error(data: bytes, max_pixels: int = 64_000_000) -> None:
    try:
        x = preprocess_bytes(data, max_pixels)
    except ImageError as exc:
        message = str(exc)
    else:
        message = None
    if message is not None:
        assert message, "an ImageError must say what is wrong"
        return
    assert x.shape == (100, 100, 1)
    assert x.dtype == np.float32
    assert np.all(np.isfinite(x))
    assert x.min() >= 0.0
    assert x.max() <= 255.0


@pytest.mark.parametrize("name", sorted(valid_images()))
def test_every_seed_format_decodes_to_a_model_input(name: str) -> None:
    x = preprocess_bytes(valid_images()[name])
    assert x.shape == (100, 100, 1)
    assert x.dtype == np.float32
    assert 0.0 <= x.min() <= x.max() <= 255.0


@pytest.mark.parametrize("name", sorted(zero_size_images()))
def test_images_without_pixels_are_refused_as_undecodable(name: str) -> None:
    with pytest.raises(UndecodableImageError):
        preprocess_bytes(zero_size_images()[name])


@pytest.mark.parametrize("name", sorted(bombs()))
def test_images_declaring_too_many_pixels_are_refused_before_decoding(name: str) -> None:
    with pytest.raises(ImageTooLargeError, match="pixels"):
        preprocess_bytes(bombs()[name])


def test_the_pixel_limit_is_the_callers_not_pillows() -> None:
    with pytest.raises(ImageTooLargeError, match="limit is 100"):
        preprocess_bytes(png_declaring(11, 10), max_pixels=100)


def test_a_header_that_promises_more_pixels_than_it_holds_is_undecodable() -> None:
    with pytest.raises(UndecodableImageError, match="truncated or corrupt"):
        preprocess_bytes(png_declaring(4000, 4000, pixel_bytes=b"\x00" * 100))


def test_a_16_bit_image_is_scaled_without_float64_temporaries() -> None:
    # 64 M pixels of 16-bit PNG are 120 KB on the wire: the scaling must not cost gigabytes.
    side = 2000
    wide = np.arange(side * side, dtype=np.uint32).reshape(side, side).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(wide).save(buffer, "PNG")
    tracemalloc.start()
    try:
        preprocess_bytes(buffer.getvalue())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # One float32 copy plus Pillow's bytes is ~6 bytes per pixel; float64 with temporaries was 24.
    assert peak / (side * side) < 10


def test_not_a_number_in_a_float_tiff_becomes_black_without_a_warning() -> None:
    pixels = np.full((50, 50), np.nan, dtype=np.float32)
    pixels[:, 25:] = np.inf
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "TIFF")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = preprocess_bytes(buffer.getvalue())
    assert x[:, :40].max() == 0.0
    assert x[:, 60:].min() == 255.0


def test_an_empty_body_is_undecodable() -> None:
    with pytest.raises(UndecodableImageError, match="empty"):
        preprocess_bytes(b"")


@fuzz_settings(150)
@given(st.binary(max_size=4096))
def test_random_bytes_give_a_model_input_or_an_image_error(data: bytes) -> None:
    assert_model_input_or_image_error(data)


@fuzz_settings(150)
@given(headers_and_noise())
def test_a_real_header_followed_by_noise_gives_a_model_input_or_an_image_error(data: bytes) -> None:
    assert_model_input_or_image_error(data)


@fuzz_settings(400)
@given(mutated_files())
def test_mutated_valid_files_give_a_model_input_or_an_image_error(data: bytes) -> None:
    assert_model_input_or_image_error(data)


def outcome(data: bytes) -> np.ndarray | type[ImageError]:
    try:
        return preprocess_bytes(data)
    except ImageError as exc:
        return type(exc)


@fuzz_settings(300)
@given(mutated_files("jpeg"))
def test_a_mutated_jpeg_gives_what_pillows_decoder_alone_gives(data: bytes) -> None:
    """The in-memory JPEG decode accepts, refuses and decodes exactly as Pillow's decoder did before it."""
    fast = outcome(data)
    with mock.patch.object(preprocessing, "_gray_jpeg_from_memory", return_value=None):
        pillow = outcome(data)
    if isinstance(fast, np.ndarray) and isinstance(pillow, np.ndarray):
        np.testing.assert_array_equal(fast, pillow)
    else:
        assert fast is pillow, f"in memory: {fast}, Pillow alone: {pillow}"


@fuzz_settings(100)
@given(hostile_files(), st.integers(1, 10_000))
def test_a_small_pixel_limit_is_respected_for_any_input(data: bytes, max_pixels: int) -> None:
    try:
        x = preprocess_bytes(data, max_pixels)
    except ImageError:
        return
    assert x.shape == (100, 100, 1)
    with Image.open(io.BytesIO(data)) as image:
        assert image.width * image.height <= max_pixels
