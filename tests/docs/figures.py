"""Pictures in the docs that tests render: rewritten when the rendering changes, not for last-digit noise."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

# A changed layout (a new row, another size) moves most pixels; a probability's fourth digit or an engine's
# rounding moves a few hundred of a million. 0.5 % of the pixels off by more than 32 levels tells them apart.
CHANGED_PIXELS = 0.005
CHANGED_LEVELS = 32


def differs(new: Path, documented: Path) -> bool:
    if not documented.is_file():
        return True
    with Image.open(new) as a, Image.open(documented) as b:
        if a.size != b.size:
            return True
        left = np.asarray(a.convert("RGB"), dtype=np.int16)
        right = np.asarray(b.convert("RGB"), dtype=np.int16)
    changed = (np.abs(left - right).max(axis=2) > CHANGED_LEVELS).mean()
    return bool(changed > CHANGED_PIXELS)


def refresh(new: Path, documented: Path) -> bool:
    """Copies `new` over `documented` when the picture changed; True when it did (commit the file)."""
    if not differs(new, documented):
        return False
    shutil.copyfile(new, documented)
    return True
