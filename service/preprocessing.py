"""The one function that turns image bytes into the model's input.

Training imports it for every image it reads and the service calls it for every
upload, so a picture gives the same tensor in both places.
"""

from __future__ import annotations

import io
import warnings
from typing import Final

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

INPUT_SIZE: Final = (100, 100)
# Named on purpose: Pillow's resize defaults to bicubic, Keras' loaders to bilinear.
RESIZE_FILTER: Final = Image.Resampling.BILINEAR
# EL images show bright cells on a dark ground, so transparency becomes dark too.
ALPHA_BACKGROUND: Final = 0
# JPEGs are decoded at a reduced DCT scale no smaller than this before the exact resize.
JPEG_DRAFT_MIN_SIDE: Final = 2 * max(INPUT_SIZE)
SUPPORTED_FORMATS: Final = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF", "TIFF"})
DEFAULT_MAX_PIXELS: Final = 64_000_000

PREPROCESSING_DESCRIPTION: Final = {
    "decoder": "Pillow",
    "exif_orientation": "applied",
    "frames": "first",
    "alpha": f"composited onto gray level {ALPHA_BACKGROUND}",
    "color": "8-bit grayscale (Pillow 'L', ITU-R 601-2 luma); 16-bit scaled by 255/65535",
    "jpeg_draft_min_side": JPEG_DRAFT_MIN_SIDE,
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
            f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    return image


def _to_grayscale(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # convert("L") would clip 16-bit values at 255 instead of scaling them. One float32 array, changed
        # in place: a 64-megapixel upload stays at ~256 MB here, not gigabytes of float64 temporaries, and
        # float32 rounds every 16-bit level to the same gray level as float64 (no v/257 is near a .5 tie).
        wide = np.array(image, dtype=np.float32)
        if image.mode == "F":
            # NaN has no gray level (casting it is undefined); a corrupt float TIFF can hold it.
            np.nan_to_num(wide, copy=False, nan=0.0)
        if image.mode.startswith("I;16") or (image.mode == "I" and wide.max(initial=0) > 255):
            wide *= np.float32(255.0 / 65535.0)
        np.rint(wide, out=wide)
        np.clip(wide, 0, 255, out=wide)
        return Image.fromarray(wide.astype(np.uint8))
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        ground = Image.new("RGBA", rgba.size, (ALPHA_BACKGROUND,) * 3 + (255,))
        image = Image.alpha_composite(ground, rgba)
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    return image.convert("L")


def preprocess_image(image: Image.Image) -> np.ndarray:
    """An opened Pillow image -> float32 array (100, 100, 1) of raw 0-255 gray levels."""
    if image.format in ("JPEG", "MPO"):
        # DCT-domain downscaling: a 12 MP photo decodes at 1/8 scale for a fraction of the cost.
        image.draft(image.mode, (JPEG_DRAFT_MIN_SIDE, JPEG_DRAFT_MIN_SIDE))
    try:
        image.seek(0)
        image.load()
        image = ImageOps.exif_transpose(image)
        gray = _to_grayscale(image)
        resized = gray.resize(INPUT_SIZE, RESIZE_FILTER)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise UndecodableImageError(f"the image data is truncated or corrupt ({exc})") from exc
    return np.asarray(resized, dtype=np.float32)[:, :, np.newaxis]


def preprocess_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Image file bytes -> float32 array (100, 100, 1) of raw 0-255 gray levels."""
    with open_image(data, max_pixels) as image:
        return preprocess_image(image)
