"""BatchNormalization statistics measured on the training images as the served model sees them.

Keras keeps running averages (momentum 0.99) of each batch's statistics while training, with
dropout on and the weights still moving; inference then normalises with those averages. Measuring
the statistics again after training, in inference mode (no dropout, final weights), on the
un-augmented training images makes inference normalise what it will actually see ("precise
BatchNorm", Wu & Johnson 2021). Weights are untouched; only moving_mean and moving_variance change.
"""

from __future__ import annotations

import keras
import numpy as np


def recalibrate_batchnorm(model: keras.Model, x: np.ndarray, batch_size: int = 64) -> int:
    """Sets every BatchNormalization layer's moving statistics to the exact per-channel mean and
    variance of its input over `x`, layer by layer in order; returns how many layers changed."""
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        probe = keras.Model(model.inputs, layer.input)
        total = None
        squares = None
        count = 0
        for start in range(0, len(x), batch_size):
            # float64 sums: a 98x98 map summed over a thousand images loses digits in float32.
            features = np.asarray(probe(x[start : start + batch_size], training=False), dtype=np.float64)
            axes = tuple(range(features.ndim - 1))
            batch_sum = features.sum(axis=axes)
            batch_squares = np.square(features).sum(axis=axes)
            total = batch_sum if total is None else total + batch_sum
            squares = batch_squares if squares is None else squares + batch_squares
            count += int(np.prod([features.shape[a] for a in axes]))
        mean = total / count
        variance = np.maximum(squares / count - np.square(mean), 0.0)
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(variance.astype(np.float32))
    return len(layers)
