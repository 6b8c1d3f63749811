"""The lower-memory conversion (strips, orientation applied to the gray image) gives byte-identical
tensors to the whole-image conversion (bench/legacy_preprocessing.py)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bench import legacy_preprocessing as legacy
from bench.legacy_preprocessing import legacy_preprocess_bytes
from service.core import preprocessing
from service.core.preprocessing import EXIF_ORIENTATION, preprocess_bytes
from tests.conftest import image_bytes

RNG_SEEDS = range(3)


def random_image(mode: str, size: tuple[int, int], seed: int) -> Image.Image:
    """Uniform random pixels, with alpha 0 and 255 forced on some rows so both edges are covered."""
    rng = np.random.default_rng(seed)
    width, height = size
    if mode == "1":
        return Image.fromarray(rng.integers(0, 2, (height, width), dtype=np.uint8) * 255).convert("1")
    if mode in ("I;16", "I;16B"):
        return Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16)).convert(mode)
    if mode == "I":
        return Image.fromarray(rng.integers(-1000, 70000, (height, width), dtype=np.int32), "I")
    if mode == "I-narrow":
        return Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.int32), "I")
    if mode == "F":
        values = rng.uniform(-10, 300, (height, width)).astype(np.float32)
        values[0, :3] = np.nan
        return Image.fromarray(values, "F")
    if mode in ("P", "P+transparency"):
        image = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8), "L").convert("P")
        image.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tobytes())
        if mode == "P+transparency":
            image.info["transparency"] = bytes(rng.integers(0, 256, 256, dtype=np.uint8))
        return image
    bands = len(mode)
    pixels = rng.integers(0, 256, (height, width, bands), dtype=np.uint8)
    if mode in ("RGBA", "LA"):
        pixels[0::3, :, -1] = 0
        pixels[1::3, :, -1] = 255
    return Image.fromarray(pixels[..., 0] if bands == 1 else pixels, mode)


MODES_AND_FORMATS = [
    ("L", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("P+transparency", "PNG"), ("RGB", "PNG"), ("RGBA", "PNG"),
    ("I;16", "PNG"), ("I;16B", "TIFF"), ("I", "TIFF"), ("I-narrow", "TIFF"), ("F", "TIFF"), ("CMYK", "TIFF"),
    ("1", "PNG"), ("RGBA", "WEBP"), ("RGB", "JPEG"), ("CMYK", "JPEG"), ("L", "GIF"), ("RGB", "BMP"),
]


def encoded(mode: str, fmt: str, size: tuple[int, int], seed: int, **save_args: object) -> bytes:
    image = random_image(mode, size, seed)
    if fmt == "WEBP":
        save_args.setdefault("lossless", True)
    if fmt == "PNG" and mode == "P+transparency":
        save_args.setdefault("transparency", image.info["transparency"])
    return image_bytes(image, fmt, **save_args)


@pytest.mark.parametrize("seed", RNG_SEEDS)
@pytest.mark.parametrize(("mode", "fmt"), MODES_AND_FORMATS)
def test_strip_conversion_gives_the_legacy_tensor_bit_for_bit(
    monkeypatch: pytest.MonkeyPatch, mode: str, fmt: str, seed: int
) -> None:
    # Tiny strips, so a small random image crosses many strip borders (and a 1-row strip wider than a strip).
    monkeypatch.setattr(preprocessing, "STRIP_PIXELS", 4096)
    data = encoded(mode, fmt, (173 + 40 * seed, 131), seed)
    np.testing.assert_array_equal(preprocess_bytes(data), legacy_preprocess_bytes(data))


@pytest.mark.parametrize("size", [(5000, 3), (3, 5000), (1, 1), (4096, 2)])
def test_strip_conversion_handles_extreme_aspect_ratios(monkeypatch: pytest.MonkeyPatch, size: tuple[int, int]) -> None:
    monkeypatch.setattr(preprocessing, "STRIP_PIXELS", 4096)
    data = encoded("RGBA", "PNG", size, 0)
    np.testing.assert_array_equal(preprocess_bytes(data), legacy_preprocess_bytes(data))


def test_every_colour_and_alpha_pair_composites_like_the_full_size_composite(monkeypatch: pytest.MonkeyPatch) -> None:
    # All 256 x 256 (value, alpha) pairs, on each channel, at a 1:1 resize so no pixel is averaged away.
    monkeypatch.setattr(preprocessing, "STRIP_PIXELS", 1000)
    monkeypatch.setattr(preprocessing, "INPUT_SIZE", (256, 256))
    value, alpha = np.meshgrid(np.arange(256, dtype=np.uint8), np.arange(256, dtype=np.uint8))
    for channel in range(3):
        pixels = np.zeros((256, 256, 4), np.uint8)
        pixels[..., channel] = value
        pixels[..., 3] = alpha
        data = image_bytes(Image.fromarray(pixels, "RGBA"), "PNG")
        with preprocessing.open_image(data) as image:
            got = preprocessing._to_grayscale(image.copy())
        with preprocessing.open_image(data) as image:
            expected = legacy._to_grayscale(image.copy())
        assert got.tobytes() == expected.tobytes()


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize(("mode", "fmt"), [("RGB", "JPEG"), ("RGBA", "PNG"), ("I;16", "PNG")])
def test_exif_orientation_on_the_gray_image_gives_the_legacy_tensor(
    monkeypatch: pytest.MonkeyPatch, orientation: int, mode: str, fmt: str
) -> None:
    monkeypatch.setattr(preprocessing, "STRIP_PIXELS", 4096)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    data = encoded(mode, fmt, (211, 97), orientation, exif=exif)
    np.testing.assert_array_equal(preprocess_bytes(data), legacy_preprocess_bytes(data))


# JPEGs: the in-memory TurboJPEG decode (simplejpeg) against Pillow's decoder at the same draft.
JPEG_SIZES = [(173, 131), (401, 399), (800, 600), (1601, 1203), (1920, 1080), (1700, 1700), (4032, 3024)]
JPEG_KINDS = {
    "ycbcr-420": {"subsampling": 2},
    "ycbcr-422": {"subsampling": 1},
    "ycbcr-444": {"subsampling": 0},
    "progressive": {"progressive": True},
    "optimized": {"optimize": True, "quality": 60},
    "restart-markers": {"restart_marker_rows": 1},
}


def noisy_photo(mode: str, size: tuple[int, int], seed: int) -> Image.Image:
    """A smooth picture with noise, so every DCT scale keeps some of its detail."""
    rng = np.random.default_rng(seed)
    width, height = size
    ramp = np.add.outer(np.linspace(0, 160, height), np.linspace(0, 80, width))
    bands = 1 if mode == "L" else 3
    pixels = ramp[..., None] + rng.normal(0, 24, (height, width, bands)) + np.arange(bands) * 20
    pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels[..., 0] if bands == 1 else pixels, mode)


def decoded_in_memory(data: bytes) -> bool:
    with preprocessing.open_image(data) as image:
        preprocessing.apply_jpeg_draft(image)
        return preprocessing._gray_jpeg_from_memory(image) is not None


# A gray JPEG has no chroma to subsample.
JPEG_MODES_AND_KINDS = [("RGB", kind) for kind in sorted(JPEG_KINDS)] + [
    ("L", kind) for kind in sorted(JPEG_KINDS) if not kind.startswith("ycbcr-")
]


@pytest.mark.parametrize("size", JPEG_SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
@pytest.mark.parametrize(("mode", "kind"), JPEG_MODES_AND_KINDS)
def test_a_jpeg_decoded_from_memory_gives_pillows_tensor_bit_for_bit(
    mode: str, kind: str, size: tuple[int, int]
) -> None:
    data = image_bytes(noisy_photo(mode, size, len(kind)), "JPEG", **{"quality": 90, **JPEG_KINDS[kind]})
    assert decoded_in_memory(data)
    np.testing.assert_array_equal(preprocess_bytes(data), legacy_preprocess_bytes(data))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_drafted_jpeg_decoded_from_memory_keeps_its_exif_orientation(orientation: int) -> None:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    data = image_bytes(noisy_photo("RGB", (1601, 1203), orientation), "JPEG", quality=90, exif=exif)
    assert decoded_in_memory(data)
    np.testing.assert_array_equal(preprocess_bytes(data), legacy_preprocess_bytes(data))


def test_an_mpo_is_decoded_from_its_first_frame() -> None:
    first, second = noisy_photo("RGB", (900, 700), 1), noisy_photo("RGB", (900, 700), 2).transpose(
        Image.Transpose.ROTATE_180
    )
    data = image_bytes(first, "MPO", save_all=True, append_images=[second], quality=90)
    assert decoded_in_memory(data)
    np.testing.assert_array_equal(preprocess_bytes(data), legacy_preprocess_bytes(data))
    np.testing.assert_array_equal(preprocess_bytes(data), preprocess_bytes(image_bytes(first, "JPEG", quality=90)))


def test_cmyk_and_colour_drafts_are_left_to_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    cmyk = image_bytes(noisy_photo("RGB", (800, 600), 0).convert("CMYK"), "JPEG", quality=90)
    assert not decoded_in_memory(cmyk)
    np.testing.assert_array_equal(preprocess_bytes(cmyk), legacy_preprocess_bytes(cmyk))
    monkeypatch.setattr(preprocessing, "JPEG_DRAFT_GRAY", False)
    assert not decoded_in_memory(image_bytes(noisy_photo("RGB", (800, 600), 0), "JPEG", quality=90))


def with_extraneous_bytes(data: bytes) -> bytes:
    """Junk before the first restart marker: libjpeg warns ("extraneous bytes before marker 0xd0") and decodes on."""
    at = data.index(b"\xff\xd0")
    return data[:at] + b"\x00\x01\x02" + data[at:]


def test_a_jpeg_libjpeg_warns_about_is_decoded_by_pillow_as_before() -> None:
    data = image_bytes(noisy_photo("RGB", (800, 600), 3), "JPEG", quality=90, restart_marker_rows=1)
    warned = with_extraneous_bytes(data)
    assert decoded_in_memory(data)
    assert not decoded_in_memory(warned)
    np.testing.assert_array_equal(preprocess_bytes(warned), legacy_preprocess_bytes(warned))


def test_a_truncated_jpeg_is_still_refused_as_pillow_refused_it() -> None:
    data = image_bytes(noisy_photo("RGB", (800, 600), 4), "JPEG", quality=90)[:-5000]
    assert not decoded_in_memory(data)
    with pytest.raises(preprocessing.UndecodableImageError, match="truncated or corrupt"):
        preprocess_bytes(data)
