"""Toy data and the tiny model variant for the training tests: small, separable, written as real image files."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # TensorFlow is imported lazily, so collecting other tests stays quick
    import keras

    from training.fit import CheckpointPaths

# Sorted, so "bright" is class 0 and "dark" the positive class 1.
TOY_CLASSES = ("bright", "dark")
TOY_LEVELS = {"bright": (150.0, 220.0), "dark": (30.0, 100.0)}


def toy_pixels(level: float, rng: np.random.Generator, size: tuple[int, int] = (100, 100)) -> np.ndarray:
    """A noisy gray image around one level; bright and dark levels never overlap."""
    return np.clip(level + rng.normal(0.0, 25.0, size), 0, 255).astype(np.uint8)


def write_toy_folder(root: Path, per_class: int = 64, seed: int = 0) -> Path:
    """root/bright/*.png and root/dark/*.png, per_class images each."""
    rng = np.random.default_rng(seed)
    for name in TOY_CLASSES:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        low, high = TOY_LEVELS[name]
        for i in range(per_class):
            Image.fromarray(toy_pixels(rng.uniform(low, high), rng)).save(folder / f"{i:03d}.png")
    return root


def encoded(image: Image.Image, fmt: str, **save_args: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save_args)
    return buffer.getvalue()


def gradient(size: tuple[int, int] = (300, 200)) -> np.ndarray:
    """A diagonal 0-255 gradient with some structure, so resizing has something to interpolate."""
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    return ((xx * 255.0 / (width - 1) + 40.0 * np.sin(yy / 7.0)) % 256).astype(np.uint8)


def sample_file(kind: str) -> bytes:
    """Image bytes of one kind the loader must treat exactly like the service."""
    gray = gradient()
    if kind == "png":
        return encoded(Image.fromarray(gray), "PNG")
    if kind == "jpeg":
        rgb = np.stack([gray, gray[::-1], np.roll(gray, 50, axis=1)], axis=-1)
        return encoded(Image.fromarray(rgb), "JPEG", quality=90)
    if kind == "rgba-png":
        rgb = np.stack([gray, gray[:, ::-1], gray], axis=-1)
        alpha = np.tile(np.linspace(0, 255, gray.shape[1]).astype(np.uint8), (gray.shape[0], 1))
        return encoded(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), "PNG")
    if kind == "16-bit-png":
        wide = gray.astype(np.uint16) * 250 + np.arange(gray.shape[1], dtype=np.uint16)[None, :] % 200
        image = Image.fromarray(wide)
        assert image.mode.startswith("I;16"), image.mode
        return encoded(image, "PNG")
    raise ValueError(kind)


TINY_FILTERS = (8, 8, 8)
# The seed's BatchNormalization momentum (0.99) needs hundreds of steps before its moving statistics
# (initialised to variance 1, far above the real one) serve inference; a toy fit takes a few dozen,
# so the tiny test models let them settle faster. With 0.9 and batches of 16, two seeds in five stayed at chance.
TINY_BATCHNORM_MOMENTUM = 0.8
TINY_EPOCHS = 6
# The toy split leaves 81 training images: nine full batches, no one-image batch to skew the statistics.
TINY_BATCH_SIZE = 9


def make_tiny_model(seed: int = 0) -> keras.Model:
    """make_model(filters=(8, 8, 8)), seeded and compiled as the seed's; only the BatchNorm momentum differs."""
    import keras

    from training.model import compile_model, make_model

    keras.utils.set_random_seed(seed)
    model = make_model(filters=TINY_FILTERS)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = TINY_BATCHNORM_MOMENTUM
    return compile_model(model)


@dataclass(frozen=True)
class Fitted:
    """What training.fit.fit left: the model (best weights loaded), its throughput, epochs and checkpoint folder."""

    model: keras.Model
    throughput: list[float]
    epochs_run: int
    checkpoints: CheckpointPaths
