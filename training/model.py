"""The seed CNN of the tutorial, built by one factory."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

SEED_FILTERS = (512, 256, 128)
SEED_INPUT_SHAPE = (100, 100, 1)
SEED_DROPOUT = 0.1
SEED_PARAMETERS = 1_484_161


def make_model(
    input_shape: Sequence[int] = SEED_INPUT_SHAPE,
    filters: Sequence[int] = SEED_FILTERS,
    dropout: float = SEED_DROPOUT,
    name: str = "seed_cnn",
) -> keras.Model:
    """Conv(3x3) -> BatchNorm -> ReLU -> MaxPool(3x3) -> Dropout, once per filter count. `name` tells
    models apart where several are combined (the fold ensemble)."""
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    # Normalisation lives in the model, so the exported graph takes raw 0-255 pixels.
    x = layers.Rescaling(1.0 / 255, name="rescaling")(inputs)
    for block, count in enumerate(filters, start=1):
        x = layers.Conv2D(count, kernel_size=(3, 3), name=f"conv{block}")(x)
        x = layers.BatchNormalization(name=f"batchnorm{block}")(x)
        x = layers.Activation("relu", name=f"relu{block}")(x)
        x = layers.MaxPooling2D(pool_size=(3, 3), name=f"maxpool{block}")(x)
        x = layers.Dropout(dropout, name=f"dropout{block}")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="probability")(x)
    return keras.Model(inputs, outputs, name=name)


def compile_model(
    model: keras.Model, learning_rate: float = 1e-3, ema_momentum: float | None = None
) -> keras.Model:
    """Adam + binary cross-entropy, as the seed; AUC added because the classes are imbalanced.

    With `ema_momentum` the optimizer keeps a moving average of the weights, and fit() ends with it.
    """
    ema = {} if ema_momentum is None else {"use_ema": True, "ema_momentum": ema_momentum}
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate, **ema),
        loss="binary_crossentropy",
        metrics=["accuracy", keras.metrics.AUC(name="auc")],
    )
    return model
