"""Training-time augmentation in Keras ops only, so it runs inside the jitted training step on any backend
(JAX on the accelerator, TensorFlow here). Each layer is the identity at inference, and none holds weights
the served model needs: the search saves the bare model (training.model.make_model) without them.

training.fit's tf.data functions do the same flips and jitter for the CPU command (`train`); these are the
accelerator's, which has no TensorFlow.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers, ops

# The pixel range the service sends (raw 0-255 gray levels, training.model rescales inside the graph).
PIXEL_MAX = 255.0


def _coin(shape: tuple, seed: keras.random.SeedGenerator) -> object:
    return keras.random.uniform(shape, seed=seed) < 0.5


class _Float32Layer(layers.Layer):
    """Computes in float32 whatever the global policy: under mixed bfloat16 a resampled gray level would be
    rounded to bfloat16's 8 significant bits before the model sees it, and TensorFlow refuses to mix the types.
    The model after it casts to its own compute type."""

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)


class RandomSymmetry(_Float32Layer):
    """Random horizontal and vertical flips of each image; with `quarter_turns` also a random transpose,
    which with the flips gives all 8 symmetries of the square (every quarter turn, mirrored or not).

    Without quarter turns ELPV's busbars stay horizontal (94 % of its cells show them so).
    """

    def __init__(self, quarter_turns: bool = False, seed: int | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.quarter_turns = quarter_turns
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, x: object, training: bool | None = None) -> object:
        if not training:
            return x
        per_image = (ops.shape(x)[0], 1, 1, 1)
        x = ops.where(_coin(per_image, self.generator), ops.flip(x, axis=2), x)
        x = ops.where(_coin(per_image, self.generator), ops.flip(x, axis=1), x)
        if self.quarter_turns:
            x = ops.where(_coin(per_image, self.generator), ops.transpose(x, (0, 2, 1, 3)), x)
        return x

    def get_config(self) -> dict:
        return {**super().get_config(), "quarter_turns": self.quarter_turns, "seed": self.seed}


class RandomSmallAffine(_Float32Layer):
    """A small random rotation (+-degrees), zoom (x[1-zoom, 1+zoom]) and shift (+-shift of the side) of
    each image, about its centre, in one bilinear resampling (three separate layers would blur three
    times); the border is reflected, so no black corners the service never sends."""

    def __init__(self, degrees: float, shift: float, zoom: float, seed: int | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.degrees, self.shift, self.zoom, self.seed = degrees, shift, zoom, seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, x: object, training: bool | None = None) -> object:
        if not training:
            return x
        batch, height, width = ops.shape(x)[0], x.shape[1], x.shape[2]

        def uniform(limit: float) -> object:
            return keras.random.uniform((batch,), -limit, limit, seed=self.generator)

        angle = uniform(math.radians(self.degrees))
        scale = 1.0 + uniform(self.zoom)
        dx, dy = uniform(self.shift * width), uniform(self.shift * height)
        # affine_transform maps each output pixel (x, y) to the input pixel it reads: the inverse of
        # "rotate by angle and scale about the centre, then shift".
        cos, sin = ops.cos(angle) / scale, ops.sin(angle) / scale
        cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
        ox, oy = cx + dx, cy + dy
        a0, a1 = cos, sin
        b0, b1 = -sin, cos
        a2 = cx - a0 * ox - a1 * oy
        b2 = cy - b0 * ox - b1 * oy
        zeros = ops.zeros_like(angle)
        transform = ops.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
        moved = ops.image.affine_transform(
            ops.cast(x, "float32"), transform, interpolation="bilinear", fill_mode="reflect"
        )
        return ops.cast(moved, x.dtype)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "degrees": self.degrees,
            "shift": self.shift,
            "zoom": self.zoom,
            "seed": self.seed,
        }


class RandomExposure(_Float32Layer):
    """Mild photometric jitter on raw 0-255 pixels, as training.fit's `jitter`: contrast x[1-s, 1+s] about
    each image's mean, then brightness +-s*255/2, clipped to the pixel range the service can send. EL images
    differ in exposure and gain between modules and cameras, not in content."""

    def __init__(self, strength: float, seed: int | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.strength, self.seed = strength, seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, x: object, training: bool | None = None) -> object:
        if not training:
            return x
        per_image = (ops.shape(x)[0], 1, 1, 1)
        s = self.strength
        contrast = keras.random.uniform(per_image, 1.0 - s, 1.0 + s, seed=self.generator)
        brightness = keras.random.uniform(per_image, -s * PIXEL_MAX / 2, s * PIXEL_MAX / 2, seed=self.generator)
        mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)
        return ops.clip((x - mean) * contrast + mean + brightness, 0.0, PIXEL_MAX)

    def get_config(self) -> dict:
        return {**super().get_config(), "strength": self.strength, "seed": self.seed}


def make_augmentation(
    *,
    quarter_turns: bool = False,
    degrees: float = 0.0,
    shift: float = 0.0,
    zoom: float = 0.0,
    jitter: float = 0.0,
    seed: int | None = None,
) -> keras.Sequential:
    """Flips (and quarter turns), then a small affine move, then exposure: each only when asked for."""
    steps: list[layers.Layer] = [RandomSymmetry(quarter_turns, seed=seed, name="symmetry")]
    if degrees or shift or zoom:
        steps.append(RandomSmallAffine(degrees, shift, zoom, seed=None if seed is None else seed + 1, name="affine"))
    if jitter:
        steps.append(RandomExposure(jitter, seed=None if seed is None else seed + 2, name="exposure"))
    return keras.Sequential(steps, name="augmentation")


def mixup(x: np.ndarray, y: np.ndarray, alpha: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Mixup (Zhang et al. 2018) of one batch with a shuffled copy of itself: one Beta(alpha, alpha) weight
    per image, for the pixels and the targets alike. On the host, in NumPy: it mixes labels too, which an
    in-graph layer does not see; the cost is one weighted sum per batch."""
    weight = rng.beta(alpha, alpha, size=len(x)).astype(np.float32)
    partner = rng.permutation(len(x))
    pixels = weight[:, None, None, None] * x + (1 - weight[:, None, None, None]) * x[partner]
    targets = weight[:, None] * y + (1 - weight[:, None]) * y[partner]
    return pixels.astype(np.float32), targets.astype(np.float32)
