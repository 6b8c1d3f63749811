"""The images the benchmark sends, generated on the spot from installed packages (nothing downloaded).

- elpv: real ELPV cells, their original 300x300 PNG bytes from the elpv-dataset package;
- photo-2mp / photo-12mp: scikit-image's bundled sample photos, cropped to the aspect, scaled up
  with Pillow to 1920x1080 / 4032x3024, given mild noise (so they compress like camera photos)
  and saved as JPEG quality 90.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from PIL import Image, ImageOps

VERSION: Final = 1
DEFAULT_DIR: Final = Path(tempfile.gettempdir()) / "cell-classifier-bench" / f"corpora-v{VERSION}"
# Colour photos bundled inside scikit-image's wheel (skimage.data reads them without a download).
SAMPLE_PHOTOS: Final = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")
PHOTO_SIZES: Final = {"photo-2mp": (1920, 1080), "photo-12mp": (4032, 3024)}
CORPUS_NAMES: Final = ("elpv", *PHOTO_SIZES)
DESCRIPTIONS: Final = {
    "elpv": "ELPV cells, original 300x300 PNG",
    "photo-2mp": "1920x1080 JPEG q90 photos",
    "photo-12mp": "4032x3024 JPEG q90 photos",
}
JPEG_QUALITY: Final = 90
# Enough noise that 12 MP files weigh ~2.5 MB, like phone JPEGs, instead of ~1 MB of smooth gradients.
NOISE_SIGMA: Final = 6.0


@dataclass(frozen=True)
class Corpus:
    name: str
    paths: tuple[Path, ...]

    @property
    def description(self) -> str:
        return DESCRIPTIONS.get(self.name, self.name)

    @property
    def list_file(self) -> Path:
        """One path a line, what bench/wrk/post.lua reads."""
        return self.paths[0].parent / "files.txt"

    def payloads(self) -> list[bytes]:
        return [path.read_bytes() for path in self.paths]

    def mean_bytes(self) -> float:
        return float(np.mean([path.stat().st_size for path in self.paths]))


def elpv_cells(count: int) -> list[tuple[str, bytes]]:
    """count cells spread evenly over the data set's list (both cell types, both classes)."""
    from training.data import elpv_root

    root = elpv_root()
    names = np.genfromtxt(root / "labels.csv", dtype="U32", usecols=0)
    chosen = names[np.linspace(0, len(names) - 1, count).round().astype(int)]
    return [(Path(name).name, (root / name).read_bytes()) for name in chosen]


def photo(name: str, size: tuple[int, int], seed: int) -> bytes:
    """One sample photo at size, with mild Gaussian noise, as JPEG bytes."""
    from skimage import data

    source = Image.fromarray(getattr(data, name)()).convert("RGB")
    scaled = np.asarray(ImageOps.fit(source, size, Image.Resampling.BICUBIC), dtype=np.int16)
    noise = np.random.default_rng(seed).normal(0.0, NOISE_SIGMA, scaled.shape).astype(np.int16)
    noisy = np.clip(scaled + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _write(folder: Path, files: Sequence[tuple[str, bytes]]) -> Corpus:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, content in files:
        path = folder / name
        path.write_bytes(content)
        paths.append(path)
    corpus = Corpus(folder.name, tuple(paths))
    corpus.list_file.write_text("".join(f"{path}\n" for path in paths))
    return corpus


def _generate(name: str, folder: Path, elpv_count: int) -> Corpus:
    if name == "elpv":
        return _write(folder, elpv_cells(elpv_count))
    size = PHOTO_SIZES[name]
    return _write(
        folder, [(f"{photo_name}.jpg", photo(photo_name, size, seed)) for seed, photo_name in enumerate(SAMPLE_PHOTOS)]
    )


def load(names: Sequence[str], root: Path = DEFAULT_DIR, elpv_count: int = 64) -> list[Corpus]:
    """The named corpora, generated into root once and reused while their manifest matches."""
    corpora = []
    for name in names:
        folder = root / name
        manifest = folder / "manifest.json"
        wanted = {
            "version": VERSION,
            "elpv_count": elpv_count if name == "elpv" else None,
            "photos": None if name == "elpv" else [*SAMPLE_PHOTOS, NOISE_SIGMA, JPEG_QUALITY],
        }
        if manifest.exists() and json.loads(manifest.read_text()) == wanted:
            paths = tuple(Path(line) for line in (folder / "files.txt").read_text().splitlines() if line)
            if all(path.exists() for path in paths):
                corpora.append(Corpus(name, paths))
                continue
        corpus = _generate(name, folder, elpv_count)
        manifest.write_text(json.dumps(wanted))
        corpora.append(corpus)
    return corpora
