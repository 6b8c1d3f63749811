"""Valid image files of every accepted format and mode, and hand-made headers that lie about their size.

They are the seeds the property tests mutate, so each one exercises a different decoder path.
"""

from __future__ import annotations

import io
import struct
import zlib
from functools import cache

import numpy as np
from PIL import Image

SIDE = 48


def _save(image: Image.Image | list[Image.Image], fmt: str, **save_args: object) -> bytes:
    buffer = io.BytesIO()
    if isinstance(image, list):
        image[0].save(buffer, fmt, save_all=True, append_images=image[1:], **save_args)
    else:
        image.save(buffer, fmt, **save_args)
    return buffer.getvalue()


def _gradient(mode: str, size: tuple[int, int] = (SIDE, SIDE)) -> Image.Image:
    return Image.linear_gradient("L").resize(size).convert(mode)


def _rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise
    return _save(_gradient("RGB", (SIDE, SIDE // 2)), "JPEG", exif=exif.tobytes())


def _sixteen_bit_png() -> bytes:
    wide = (np.arange(SIDE * SIDE, dtype=np.uint16).reshape(SIDE, SIDE) * 28).astype(np.uint16)
    return _save(Image.fromarray(wide), "PNG")


def _palette_with_transparency() -> bytes:
    image = _gradient("P")
    return _save(image, "PNG", transparency=0)


def _frames(n: int) -> list[Image.Image]:
    return [_gradient("L").point(lambda v, k=k: (v + 40 * k) % 256) for k in range(n)]


@cache
def valid_images() -> dict[str, bytes]:
    """name -> file bytes; every one decodes to a (100, 100, 1) array."""
    return {
        "png-gray": _save(_gradient("L"), "PNG"),
        "png-rgba": _save(_gradient("RGBA"), "PNG"),
        "png-palette-transparent": _palette_with_transparency(),
        "png-16bit": _sixteen_bit_png(),
        "png-interlaced": _save(_gradient("RGB"), "PNG", interlace=1),
        "jpeg-rgb": _save(_gradient("RGB"), "JPEG", quality=80),
        "jpeg-progressive": _save(_gradient("L"), "JPEG", progressive=True),
        "jpeg-exif-rotated": _rotated_jpeg(),
        "jpeg-cmyk": _save(_gradient("CMYK"), "JPEG"),
        "gif-animated": _save(_frames(3), "GIF", duration=50, loop=0),
        "webp-lossy": _save(_gradient("RGB"), "WEBP", quality=70),
        "webp-lossless-alpha": _save(_gradient("RGBA"), "WEBP", lossless=True),
        "tiff-multipage": _save(_frames(2), "TIFF"),
        "tiff-deflate": _save(_gradient("RGB"), "TIFF", compression="tiff_adobe_deflate"),
        "tiff-float": _save(
            Image.fromarray(np.linspace(0, 300, SIDE * SIDE, dtype=np.float32).reshape(SIDE, SIDE)), "TIFF"
        ),
        "bmp": _save(_gradient("RGB"), "BMP"),
        # Extreme aspect ratios, width x height.
        "wide-100000x1": _save(_gradient("L", (100_000, 1)), "PNG"),
        "tall-1x100000": _save(_gradient("L", (1, 100_000)), "PNG"),
    }


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int, *, pixel_bytes: bytes = b"") -> bytes:
    """A PNG whose header declares width x height 8-bit gray, with only pixel_bytes of real data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(pixel_bytes))
        + _png_chunk(b"IEND", b"")
    )


def gif_declaring(width: int, height: int) -> bytes:
    """A GIF whose logical screen and only frame declare width x height, with one byte of image data."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return screen + frame + b"\x3b"


def zero_size_images() -> dict[str, bytes]:
    return {
        "png-0x0": png_declaring(0, 0),
        "png-0x10": png_declaring(0, 10),
        "gif-0x0": gif_declaring(0, 0),
        "gif-10x0": gif_declaring(10, 0),
    }


def bombs() -> dict[str, bytes]:
    """Small files that declare more pixels than the default limit (64 M)."""
    return {
        "png-100000x100000": png_declaring(100_000, 100_000),
        "png-2^31-1-wide": png_declaring(2**31 - 1, 2),
        "gif-65535x65535": gif_declaring(65_535, 65_535),
        # 8000 x 8000 = 64 M exactly is allowed; one more row is not.
        "png-8000x8001": png_declaring(8000, 8001),
    }
