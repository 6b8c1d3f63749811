"""An explanation as a PNG: the 100x100 input the model saw, upscaled, the occlusion map blended over it,
the strongest region outlined, and a colour bar. Drawn with Pillow; the colours are matplotlib's RdBu_r.

Why not matplotlib itself: measured, it (with fontTools, kiwisolver, contourpy) grows the Docker image from
370 MB to 445 MB, over its 400 MB budget; the colormap is all the map needs from it (service.core.colormap).
"""

from __future__ import annotations

import io
from typing import Final

import numpy as np
from PIL import Image, ImageColor, ImageDraw, ImageFont

from service.core.colormap import COLORS
from service.core.explain import SIDE, Explanation

SCALE: Final = 4
# Diverging and centred on zero: red where hiding a region lowers the predicted class's probability
# (evidence for it), blue where it raises it (evidence against), white where it changes nothing.
ALPHA: Final = 0.45
OUTLINE: Final = (255, 215, 0)
# Margins in pixels around the upscaled input: a title line above, the colour bar and its labels to the right.
_TOP, _BOTTOM, _LEFT, _RIGHT = 28, 8, 8, 96
_BAR_GAP, _BAR_WIDTH = 8, 14
_LUT: Final = np.array([ImageColor.getrgb(color) for color in COLORS], dtype=np.float64)


def figure_size(scale: int = SCALE) -> tuple[int, int]:
    """(width, height) in pixels of the PNG for `scale`."""
    side = SIDE * scale
    return _LEFT + side + _RIGHT, _TOP + side + _BOTTOM


def _colors(values: np.ndarray, limit: float) -> np.ndarray:
    """Values in [-limit, limit] -> RGB floats from the colormap (NaN -> index 0, masked by the caller)."""
    index = np.rint((np.nan_to_num(values) / limit + 1) / 2 * (len(_LUT) - 1)).clip(0, len(_LUT) - 1)
    return _LUT[index.astype(int)]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size)


def render_png(explanation: Explanation, threshold: float, scale: int = SCALE) -> bytes:
    """The explanation drawn over its input, upscaled `scale` times; figure_size(scale) pixels."""
    width, height = figure_size(scale)
    side = SIDE * scale
    pixel_map = explanation.pixel_map()
    covered = np.isfinite(pixel_map)
    limit = max(float(np.abs(pixel_map[covered]).max()) if covered.any() else 0.0, 1e-6)

    gray = np.repeat(explanation.image[:, :, :1].astype(np.float64), 3, axis=2)
    blended = np.where(covered[:, :, None], (1 - ALPHA) * gray + ALPHA * _colors(pixel_map, limit), gray)
    picture = Image.fromarray(np.rint(blended).clip(0, 255).astype(np.uint8), "RGB")
    picture = picture.resize((side, side), Image.Resampling.NEAREST)

    canvas = Image.new("RGB", (width, height), "white")
    canvas.paste(picture, (_LEFT, _TOP))
    draw = ImageDraw.Draw(canvas)
    x0, y0, x1, y1 = explanation.grid.box(*explanation.strongest)
    draw.rectangle(
        (_LEFT + x0 * scale, _TOP + y0 * scale, _LEFT + x1 * scale - 1, _TOP + y1 * scale - 1),
        outline=OUTLINE, width=2,
    )
    title = f"{explanation.label}  p={explanation.probability:.3f}  (threshold {threshold:g})"
    draw.text((_LEFT, 6), title, fill="black", font=_font(14))

    # The colour bar: +limit at the top, 0 in the middle, -limit at the bottom, labelled.
    bar_left = _LEFT + side + _BAR_GAP
    ramp = np.linspace(limit, -limit, side)
    bar = np.repeat(_colors(ramp, limit)[:, None, :], _BAR_WIDTH, axis=1)
    canvas.paste(Image.fromarray(np.rint(bar).astype(np.uint8), "RGB"), (bar_left, _TOP))
    draw.rectangle((bar_left, _TOP, bar_left + _BAR_WIDTH - 1, _TOP + side - 1), outline="black")
    small = _font(11)
    for value, y in ((limit, _TOP), (0.0, _TOP + side // 2), (-limit, _TOP + side - 1)):
        draw.line((bar_left + _BAR_WIDTH, y, bar_left + _BAR_WIDTH + 3, y), fill="black")
        text_y = min(max(y, _TOP + 6), _TOP + side - 7)  # inside the figure at both ends
        draw.text((bar_left + _BAR_WIDTH + 5, text_y), f"{value:+.3f}", fill="black", font=small, anchor="lm")
    caption = Image.new("RGB", (side, 16), "white")
    ImageDraw.Draw(caption).text(
        (side // 2, 8), f"drop in p({explanation.label})", fill="black", font=small, anchor="mm"
    )
    canvas.paste(caption.rotate(90, expand=True), (width - 18, _TOP))

    buffer = io.BytesIO()
    canvas.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def input_png(image: np.ndarray) -> bytes:
    """The (SIDE, SIDE, 1) raw 0-255 model input as an 8-bit grayscale PNG, pixel for pixel."""
    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.rint(image[:, :, 0]), 0, 255).astype(np.uint8), mode="L").save(buffer, "PNG")
    return buffer.getvalue()
