"""The one function that turns image bytes into the model's input.

Training imports it for every image it reads and the service calls it for every
upload, so a picture gives the same tensor in both places.
"""

from __future__ import annotations

import io
import warnings
from typing import Final

import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

INPUT_SIZE: Final = (100, 100)
# Named on purpose: Pillow's resize defaults to bicubic, Keras' loaders to bilinear.
RESIZE_FILTER: Final = Image.Resampling.BILINEAR
# EL images show bright cells on a dark ground, so transparency becomes dark too.
ALPHA_BACKGROUND: Final = 0
# JPEGs are decoded at a reduced DCT scale no smaller than this before the exact resize.
JPEG_DRAFT_MIN_SIDE: Final = 2 * max(INPUT_SIZE)
# Colour JPEGs are decoded by libjpeg straight to its luma channel (the same ITU-R 601-2 weights as Pillow's
# "L"): no chroma is upsampled or converted. 8 % less decode CPU on 1080p photos; it changes no held-out label
# and moves probabilities far less than the INT8 variant does (`python -m bench.draft_scale`, BENCHMARKS.md).
JPEG_DRAFT_GRAY: Final = True
# Pillow's names for a JPEG file (an MPO is a JPEG followed by more frames): what the draft applies to.
JPEG_FORMATS: Final = frozenset({"JPEG", "MPO"})
SUPPORTED_FORMATS: Final = JPEG_FORMATS | {"PNG", "WEBP", "BMP", "GIF", "TIFF"}
DEFAULT_MAX_PIXELS: Final = 64_000_000

PREPROCESSING_DESCRIPTION: Final = {
    "decoder": "Pillow",
    "exif_orientation": "applied",
    "frames": "first",
    "alpha": f"composited onto gray level {ALPHA_BACKGROUND}",
    "color": "8-bit grayscale (Pillow 'L', ITU-R 601-2 luma); 16-bit scaled by 255/65535",
    "jpeg_draft_min_side": JPEG_DRAFT_MIN_SIDE,
    "jpeg_draft_mode": "L" if JPEG_DRAFT_GRAY else "as encoded",
    "size": list(INPUT_SIZE),
    "resize_filter": RESIZE_FILTER.name.lower(),
    "aspect_ratio": "not kept (stretched), as keras.utils.image_dataset_from_directory",
    "values": "raw 0-255 float32; the model rescales",
    "layout": "NHWC (N, 100, 100, 1)",
}


class ImageError(ValueError):
    """An upload that cannot become a model input; the message is safe to show a user."""


class UndecodableImageError(ImageError):
    """The bytes are empty, truncated or not an image."""


class UnsupportedImageFormatError(ImageError):
    """A real image, but in a format the service does not accept."""


class ImageTooLargeError(ImageError):
    """The image declares more pixels than allowed (decompression-bomb guard)."""


def open_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Reads the header only and refuses what must not be decoded."""
    if not data:
        raise UndecodableImageError("the file is empty")
    try:
        with warnings.catch_warnings():
            # Our own pixel limit below is the guard; Pillow's warning is noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(
            f"the image declares too many pixels (limit {max_pixels})"
        ) from exc
    except UnidentifiedImageError as exc:
        raise UndecodableImageError("the bytes are not a decodable image") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise UndecodableImageError("the image header is corrupt") from exc
    if image.format not in SUPPORTED_FORMATS:
        raise UnsupportedImageFormatError(
            f"image format {image.format} is not supported; "
            f"send one of {', '.join(sorted(SUPPORTED_FORMATS - {'MPO'}))}"
        )
    width, height = image.size
    if width < 1 or height < 1:
        raise UndecodableImageError("the image has no pixels")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels} "
            "(MAX_PIXELS, by default what the memory allows): send it downscaled"
        )
    return image


WIDE_MODES: Final = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
ALPHA_MODES: Final = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
# Every conversion step is per pixel, so it runs on horizontal strips of about this many pixels: the
# full-size RGBA copies, composite and float32 array (~20 bytes per pixel, 1.2 GB for one 64 MP RGBA
# PNG converted whole) shrink to ~6 MB per strip, and the tensor stays byte-identical.
STRIP_PIXELS: Final = 1 << 18
# Pillow's own map (ImageOps.exif_transpose), applied here to the gray image rather than the decoded
# one: a transpose of a full-colour 64 MP image is another 256 MB, of the gray one 64 MB.
EXIF_TRANSPOSE: Final = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
EXIF_ORIENTATION: Final = 0x0112


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ALPHA_MODES or (image.mode == "P" and "transparency" in image.info)


def _scales_16_bit(image: Image.Image) -> bool:
    """Whether wide values are scaled by 255/65535; decided once for the whole image, not per strip."""
    if image.mode.startswith("I;16"):
        return True
    if image.mode == "I":
        # The extreme of the whole image, without a float copy of it (same answer as a float32 max).
        return max(image.getextrema()[1], 0) > 255
    return False


def _gray_pixels(image: Image.Image, scale_16_bit: bool) -> Image.Image:
    """One strip (or a small image) -> 8-bit gray. Every step is per pixel."""
    if image.mode in WIDE_MODES:
        # convert("L") would clip 16-bit values at 255 instead of scaling them. float32 rounds every
        # 16-bit level to the same gray level as float64 (no v/257 is near a .5 tie).
        wide = np.array(image, dtype=np.float32)
        if image.mode == "F":
            # NaN has no gray level (casting it is undefined); a corrupt float TIFF can hold it.
            np.nan_to_num(wide, copy=False, nan=0.0)
        if scale_16_bit:
            wide *= np.float32(255.0 / 65535.0)
        np.rint(wide, out=wide)
        np.clip(wide, 0, 255, out=wide)
        return Image.fromarray(wide.astype(np.uint8))
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        ground = Image.new("RGBA", rgba.size, (ALPHA_BACKGROUND,) * 3 + (255,))
        image = Image.alpha_composite(ground, rgba)
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    return image.convert("L")


def _to_grayscale(image: Image.Image) -> Image.Image:
    scale_16_bit = _scales_16_bit(image)
    width, height = image.size
    rows = max(1, STRIP_PIXELS // width)
    if rows >= height:
        return _gray_pixels(image, scale_16_bit)
    gray = Image.new("L", image.size)
    for top in range(0, height, rows):
        # crop() keeps the palette and info (transparency), so each strip converts like the whole.
        strip = image.crop((0, top, width, min(top + rows, height)))
        gray.paste(_gray_pixels(strip, scale_16_bit), (0, top))
    return gray


def apply_jpeg_draft(image: Image.Image) -> None:
    """Before the decode: a JPEG's DCT-domain draft (a no-op for every other format)."""
    if image.format in JPEG_FORMATS:
        # DCT-domain downscaling: a 12 MP photo decodes at 1/8 scale for a fraction of the cost.
        # Pillow applies only the first call, so estimating and decoding may both ask; it takes "L" from a
        # YCbCr file only (a gray or CMYK one keeps its mode).
        image.draft("L" if JPEG_DRAFT_GRAY else image.mode, (JPEG_DRAFT_MIN_SIDE, JPEG_DRAFT_MIN_SIDE))


def _gray_jpeg_from_memory(image: Image.Image) -> Image.Image | None:
    """A drafted gray JPEG's pixels, decoded in one call from the bytes in memory; None where Pillow decodes.

    The same libjpeg-turbo at the same DCT scale and the same luma as Pillow's decoder, so the same bytes
    (tests/service/test_preprocessing_identity.py compares every kind of JPEG), for less CPU: Pillow feeds
    libjpeg 64 KB at a time and copies every row out, TurboJPEG decodes the whole file into one array (1080p
    photos 4.89 -> 4.50 ms, 12 MP 23.4 -> 22.1 ms on one thread, BENCHMARKS.md). simplejpeg refuses on any
    libjpeg warning (strict), so a file with extraneous bytes or a truncated one goes to Pillow's decoder, which
    accepts or refuses it as it always did.
    """
    if image.format not in JPEG_FORMATS or image.mode != "L" or not isinstance(image.fp, io.BytesIO):
        return None
    width, height = image.size  # after the draft: the scale Pillow chose, which the minimum sizes pin
    with image.fp.getbuffer() as data:  # the whole file; an MPO's first frame starts at its first byte
        try:
            pixels = simplejpeg.decode_jpeg(data, colorspace="GRAY", min_width=width, min_height=height)
        except ValueError:
            return None
    if pixels.shape != (height, width, 1):
        return None
    return Image.fromarray(pixels[:, :, 0])


def preprocess_image(image: Image.Image) -> np.ndarray:
    """An opened Pillow image -> float32 array (100, 100, 1) of raw 0-255 gray levels."""
    apply_jpeg_draft(image)
    try:
        decoded = _gray_jpeg_from_memory(image)
        if decoded is None:
            image.seek(0)
            image.load()
        # The orientation is applied to the gray image: conversion is per pixel, so the order does
        # not change the tensor, only the size of the copy. A JPEG's EXIF is in its header.
        transpose = EXIF_TRANSPOSE.get(image.getexif().get(EXIF_ORIENTATION, 1))
        gray = _to_grayscale(decoded if decoded is not None else image)
        if transpose is not None:
            gray = gray.transpose(transpose)
        resized = gray.resize(INPUT_SIZE, RESIZE_FILTER)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise UndecodableImageError(f"the image data is truncated or corrupt ({exc})") from exc
    return np.asarray(resized, dtype=np.float32)[:, :, np.newaxis]


# Bytes per pixel of Pillow's storage: 1 for "1", "L", "P", 2 for 16-bit, 4 for every other mode
# (RGB and LA included: Pillow pads them to 32 bits).
_STORAGE_BYTES: Final = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
# What one strip costs at most: its crop (4), RGBA copy (4), black ground (4), composite (4), RGB (4) and
# gray (1); the 16-bit path needs less (crop, tobytes, float32, uint8).
STRIP_BYTES_PER_PIXEL: Final = 24
# Decoder state, allocator rounding, thread stack: the formula alone came within 2 % of the measured peak
# (EXIF-rotated 64 MP RGBA PNG: 386 MB of 394 MB), so 1/16 more plus 8 MB (BENCHMARKS.md).
DECODE_OVERHEAD_BYTES: Final = 8 * 1024 * 1024


def _storage_bytes(mode: str) -> int:
    return _STORAGE_BYTES.get(mode, 4)


def _jpeg_coefficient_bytes(image: Image.Image) -> int:
    """libjpeg keeps every DCT coefficient (2 bytes each) at full size for a progressive or multi-scan file,
    whatever the draft scale; the header cannot say which, so it is always counted."""
    width, height = image.size
    layers = getattr(image, "layer", None) or [("", 1, 1, 0)] * len(image.getbands())
    h_max = max(h for _, h, _, _ in layers)
    v_max = max(v for _, _, v, _ in layers)
    padded = (width + 8 * h_max) * (height + 8 * v_max)
    return sum(2 * padded * h * v // (h_max * v_max) for _, h, v, _ in layers)


def _decoder_bytes(image: Image.Image) -> int:
    """Buffers a decoder holds beside Pillow's image, from the header (before the JPEG draft)."""
    pixels = image.size[0] * image.size[1]
    if image.format in JPEG_FORMATS:
        return _jpeg_coefficient_bytes(image)
    if image.format == "WEBP":
        # libwebp decodes into its own RGBA buffer, copied to a canvas (measured: 3 x 4 bytes per pixel).
        return 3 * 4 * pixels
    if image.format == "TIFF":
        # libtiff reads a whole strip or tile; one strip may be the whole image.
        return pixels * _storage_bytes(image.mode)
    if image.format == "BMP":
        # The RLE decoder collects the whole image in a bytearray, then copies it.
        return 2 * pixels * _storage_bytes(image.mode)
    # PNG and GIF decode row by row.
    return 0


def estimate_decode_bytes(image: Image.Image) -> int:
    """An upper bound of the memory preprocess_image(image) needs at its peak, from the header alone.

    Follows preprocess_image: the decoder's buffers, the decoded image in Pillow's storage (at the JPEG
    draft scale, which this applies, as preprocess_image would), one strip's conversions, the gray image
    and its transposed copy (the EXIF orientation may only be known after decoding). The tests measure
    the real peak RSS of every mode against it.
    """
    decoder = _decoder_bytes(image)
    apply_jpeg_draft(image)
    width, height = image.size
    pixels = width * height
    decoded = pixels * _storage_bytes(image.mode)
    strip = min(pixels, max(STRIP_PIXELS, width)) * STRIP_BYTES_PER_PIXEL
    total = decoder + decoded + strip + 2 * pixels
    return total + total // 16 + DECODE_OVERHEAD_BYTES


def preprocess_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Image file bytes -> float32 array (100, 100, 1) of raw 0-255 gray levels."""
    with open_image(data, max_pixels) as image:
        return preprocess_image(image)
