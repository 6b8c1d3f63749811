"""An explanation as a PNG: the 100x100 input the model saw, upscaled, the occlusion map blended over it,
the strongest region outlined, and a colour bar. Drawn with matplotlib's Agg canvas (no pyplot, no display)."""

from __future__ import annotations

import io
import threading
from typing import Final

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from service.explain import SIDE, Explanation

SCALE: Final = 4
# Diverging and centred on zero: red where hiding a region lowers the predicted class's probability
# (evidence for it), blue where it raises it (evidence against).
COLORMAP: Final = "RdBu_r"
ALPHA: Final = 0.45
DPI: Final = 100
# Margins in pixels around the upscaled input: a title line above, the colour bar and its ticks to the right.
_TOP, _BOTTOM, _LEFT, _RIGHT = 28, 8, 8, 96
_COLORBAR_WIDTH = 14
# matplotlib's text layout and font cache are not documented as thread-safe; renders are short (tens of ms).
_lock = threading.Lock()


def figure_size(scale: int = SCALE) -> tuple[int, int]:
    """(width, height) in pixels of the PNG for `scale`."""
    side = SIDE * scale
    return _LEFT + side + _RIGHT, _TOP + side + _BOTTOM


def render_png(explanation: Explanation, threshold: float, scale: int = SCALE) -> bytes:
    """The explanation drawn over its input, upscaled `scale` times; figure_size(scale) pixels."""
    with _lock:
        return _render(explanation, threshold, scale)


def _render(explanation: Explanation, threshold: float, scale: int) -> bytes:
    width, height = figure_size(scale)
    side = SIDE * scale
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((_LEFT / width, _BOTTOM / height, side / width, side / height))
    axes.set_axis_off()
    extent = (0, SIDE, SIDE, 0)
    axes.imshow(explanation.image[:, :, 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest", extent=extent)
    pixel_map = explanation.pixel_map()
    limit = float(np.nanmax(np.abs(pixel_map))) if np.isfinite(pixel_map).any() else 0.0
    limit = max(limit, 1e-6)
    overlay = axes.imshow(
        np.ma.masked_invalid(pixel_map), cmap=COLORMAP, norm=TwoSlopeNorm(0.0, -limit, limit),
        alpha=ALPHA, interpolation="nearest", extent=extent,
    )
    x0, y0, x1, y1 = explanation.grid.box(*explanation.strongest)
    axes.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="yellow", linewidth=1.5))
    axes.set_xlim(0, SIDE)
    axes.set_ylim(SIDE, 0)
    figure.text(
        _LEFT / width, 1 - 6 / height,
        f"{explanation.label}  p={explanation.probability:.3f}  (threshold {threshold:g})",
        va="top", ha="left", fontsize=10,
    )
    bar_axes = figure.add_axes(
        ((_LEFT + side + 8) / width, _BOTTOM / height, _COLORBAR_WIDTH / width, side / height)
    )
    bar = figure.colorbar(overlay, cax=bar_axes)
    bar.solids.set_alpha(1.0)
    bar.ax.tick_params(labelsize=8)
    bar.set_label(f"drop in p({explanation.label})", fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def input_png(image: np.ndarray) -> bytes:
    """The (SIDE, SIDE, 1) raw 0-255 model input as an 8-bit grayscale PNG, pixel for pixel."""
    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.rint(image[:, :, 0]), 0, 255).astype(np.uint8), mode="L").save(buffer, "PNG")
    return buffer.getvalue()
