"""BatchNorm statistics measured again in inference mode: exactly the mean and variance of each layer's input."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_recalibration_sets_each_batchnorm_to_its_inputs_statistics_and_keeps_the_weights() -> None:
    import keras

    from tests.training.toy import make_tiny_model
    from training.batchnorm import recalibrate_batchnorm

    model = make_tiny_model(seed=0)
    x = np.random.default_rng(0).integers(0, 256, (20, 100, 100, 1)).astype(np.float32)
    weights = [w.copy() for w in model.get_weights()]
    batchnorms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]

    changed = recalibrate_batchnorm(model, x, batch_size=7)

    assert changed == len(batchnorms) == 3
    for layer in batchnorms:
        features = np.asarray(keras.Model(model.inputs, layer.input)(x, training=False), dtype=np.float64)
        np.testing.assert_allclose(layer.moving_mean.numpy(), features.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(layer.moving_variance.numpy(), features.var(axis=(0, 1, 2)), rtol=1e-3, atol=1e-5)
    trainable = {id(v) for v in model.trainable_variables}
    for before, variable in zip(weights, model.weights, strict=True):
        if id(variable) in trainable:
            np.testing.assert_array_equal(before, variable.numpy())
