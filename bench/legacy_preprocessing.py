"""The whole-image conversion (full-size RGBA composites, EXIF copy first), frozen here so the
memory benchmark can measure the "before" and tests can prove the lower-memory path gives byte-identical
tensors. Not used by the service."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from service.core.preprocessing import ALPHA_BACKGROUND, INPUT_SIZE, RESIZE_FILTER, apply_jpeg_draft, open_image


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


def legacy_preprocess_bytes(data: bytes) -> np.ndarray:
    with open_image(data) as image:
        # The service's draft (luma for colour JPEGs): what this freezes is the conversion after it.
        apply_jpeg_draft(image)
        image.seek(0)
        image.load()
        image = ImageOps.exif_transpose(image)
        resized = _to_grayscale(image).resize(INPUT_SIZE, RESIZE_FILTER)
    return np.asarray(resized, dtype=np.float32)[:, :, np.newaxis]
