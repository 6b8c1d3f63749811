"""Learning-rate schedules, in Keras alone (no TensorFlow): the CPU fit (training.fit) and the accelerator's
recipe search (training.accelerator, Keras on JAX) take the same curve from here."""

from __future__ import annotations

import math

import keras


def cosine_rate(epoch: int, initial: float, epochs: int, warmup_epochs: int = 0, floor: float = 1e-6) -> float:
    """Linear warm-up to `initial` over `warmup_epochs`, then half a cosine down to `floor` at the last epoch."""
    if epoch < warmup_epochs:
        return initial * (epoch + 1) / (warmup_epochs + 1)
    progress = min((epoch - warmup_epochs) / max(epochs - warmup_epochs - 1, 1), 1.0)
    return floor + 0.5 * (initial - floor) * (1.0 + math.cos(math.pi * progress))


def cosine_schedule(
    initial: float, epochs: int, floor: float = 1e-6, warmup_epochs: int = 0
) -> keras.callbacks.Callback:
    """Learning rate from `initial` down to `floor` along half a cosine over `epochs` (after any warm-up).

    A function of the epoch index, so a resumed run picks the curve up where it stopped.
    """
    return keras.callbacks.LearningRateScheduler(
        lambda epoch, _current: cosine_rate(epoch, initial, epochs, warmup_epochs, floor)
    )
