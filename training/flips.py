"""Test-time flips: the mean of the model's answers to an image and its three flips.

The four flips (identity, horizontal, vertical, both) are the augmentation's transforms: they keep
ELPV's horizontal busbars horizontal, so each is an image the model was trained to answer.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

FLIPS = ("identity", "horizontal", "vertical", "both")


def flipped(x: np.ndarray) -> list[np.ndarray]:
    """The four flips of an (N, H, W, C) batch, in the order of FLIPS."""
    return [x, x[:, :, ::-1], x[:, ::-1, :], x[:, ::-1, ::-1]]


def flip_averaged_predict(model: keras.Model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """(N, 1): the mean of the model's probabilities over the four flips of each image."""
    return np.mean([model.predict(v, batch_size=batch_size, verbose=0) for v in flipped(x)], axis=0)


def with_flip_averaging(model: keras.Model) -> keras.Model:
    """A model with the same input and output signature whose answer is the mean over the four flips.

    Built from Keras ops, so the ONNX export holds the flips and the mean in its graph and a server
    needs nothing new: float32 (N, 100, 100, 1) -> (N, 1).
    """
    inputs = keras.Input(shape=model.input_shape[1:], name="input")
    horizontal = layers.Lambda(lambda t: keras.ops.flip(t, axis=2), name="flip_horizontal")(inputs)
    vertical = layers.Lambda(lambda t: keras.ops.flip(t, axis=1), name="flip_vertical")(inputs)
    both = layers.Lambda(lambda t: keras.ops.flip(t, axis=1), name="flip_both")(horizontal)
    answers = [model(view, training=False) for view in (inputs, horizontal, vertical, both)]
    outputs = layers.Average(name="flip_average")(answers)
    return keras.Model(inputs, outputs, name=f"{model.name}_flip_averaged")
