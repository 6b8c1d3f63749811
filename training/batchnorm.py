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
from keras import ops


def recalibrate_batchnorm(model: keras.Model, x: np.ndarray, batch_size: int = 32) -> int:
    """Sets every BatchNormalization layer's moving statistics to the exact per-channel mean and
    variance of its input over `x`, layer by layer in order; returns how many layers changed.

    Per batch, the backend (Keras ops only: TensorFlow here, JAX on the accelerator) reduces the
    (batch, 98, 98, 512) first-block activations to per-channel moments in float32 (a float64 copy
    of them is 2.5 GB per 64 images); the batches' moments are then pooled in float64 (Chan et al.'s
    parallel variance), which needs no E[x^2] - E[x]^2.
    """
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        probe = keras.Model(model.input, layer.input)
        count = 0
        mean = variance = None
        for start in range(0, len(x), batch_size):
            features = ops.cast(probe(x[start : start + batch_size], training=False), "float32")
            axes = tuple(range(len(features.shape) - 1))
            batch_mean, batch_variance = (
                ops.convert_to_numpy(m).astype(np.float64) for m in ops.moments(features, axes=axes)
            )
            batch_count = int(np.prod(features.shape[:-1]))
            if mean is None:
                mean, variance, count = batch_mean, batch_variance, batch_count
                continue
            total = count + batch_count
            delta = batch_mean - mean
            spread = count * variance + batch_count * batch_variance + delta**2 * count * batch_count / total
            variance = spread / total
            mean = mean + delta * batch_count / total
            count = total
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(variance.astype(np.float32))
    return len(layers)
