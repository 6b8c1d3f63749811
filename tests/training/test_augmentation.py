"""The backend-neutral augmentation (Keras ops only): which transforms each layer makes, and none at inference."""

from __future__ import annotations

import numpy as np
import pytest


def asymmetric(count: int = 1) -> np.ndarray:
    """Images no flip or transpose maps onto themselves, so each output names the transform that made it."""
    base = np.arange(100 * 100, dtype=np.float32).reshape(100, 100) % 251
    return np.stack([base] * count)[..., None]


def symmetries(image: np.ndarray, quarter_turns: bool) -> list[np.ndarray]:
    flips = [image, image[:, ::-1], image[::-1], image[::-1, ::-1]]
    if not quarter_turns:
        return flips
    turned = image.transpose(1, 0, 2)
    return [*flips, turned, turned[:, ::-1], turned[::-1], turned[::-1, ::-1]]


@pytest.mark.parametrize(("quarter_turns", "expected"), [(False, 4), (True, 8)])
def test_symmetry_makes_flips_and_with_quarter_turns_all_eight_symmetries(quarter_turns: bool, expected: int) -> None:
    from training.augmentation import RandomSymmetry

    x = asymmetric(64)
    out = np.asarray(RandomSymmetry(quarter_turns, seed=0)(x, training=True))

    allowed = symmetries(x[0], quarter_turns)
    seen = set()
    for image in out:
        matches = [k for k, t in enumerate(allowed) if np.array_equal(image, t)]
        assert len(matches) == 1, "a transform outside the allowed ones"
        seen.add(matches[0])
    assert seen == set(range(expected)), f"only {sorted(seen)} in 64 images"


def test_small_affine_moves_a_little_and_is_the_identity_with_zero_range() -> None:
    from training.augmentation import RandomSmallAffine

    yy, xx = np.mgrid[0:100, 0:100]
    smooth = (127 + 100 * np.sin(xx / 9.0) * np.cos(yy / 13.0)).astype(np.float32)
    x = np.stack([smooth] * 16)[..., None]

    still = np.asarray(RandomSmallAffine(0.0, 0.0, 0.0, seed=0)(x, training=True))
    moved = np.asarray(RandomSmallAffine(5.0, 0.05, 0.05, seed=0)(x, training=True))

    np.testing.assert_allclose(still, x, atol=1e-3)
    assert all(np.abs(m - x[0]).mean() > 0.5 for m in moved), "some image was not moved"
    correlation = [np.corrcoef(m.ravel(), smooth.ravel())[0, 1] for m in moved]
    assert min(correlation) > 0.5, "more than a small move"
    assert moved.min() >= smooth.min() - 1
    assert moved.max() <= smooth.max() + 1


def test_exposure_shifts_brightness_and_contrast_mildly_within_the_pixel_range() -> None:
    from training.augmentation import RandomExposure

    x = np.random.default_rng(0).integers(0, 256, (32, 100, 100, 1)).astype(np.float32)

    out = np.asarray(RandomExposure(0.1, seed=0)(x, training=True))

    assert out.min() >= 0
    assert out.max() <= 255
    shifts = np.abs(out.mean(axis=(1, 2, 3)) - x.mean(axis=(1, 2, 3)))
    assert shifts.max() <= 0.1 * 255 / 2 + 1
    assert shifts.max() > 0.5
    assert min(np.corrcoef(o.ravel(), i.ravel())[0, 1] for o, i in zip(out, x, strict=True)) > 0.98


def test_augmentation_is_the_identity_at_inference() -> None:
    from training.augmentation import make_augmentation

    x = asymmetric(4)
    augmentation = make_augmentation(quarter_turns=True, degrees=5, shift=0.05, zoom=0.05, jitter=0.1, seed=0)

    assert [layer.name for layer in augmentation.layers] == ["symmetry", "affine", "exposure"]
    np.testing.assert_array_equal(np.asarray(augmentation(x, training=False)), x)
    assert not np.array_equal(np.asarray(augmentation(x, training=True)), x)


def test_mixup_mixes_pixels_and_targets_with_the_same_weights() -> None:
    from training.augmentation import mixup

    # Flat images whose gray level is a linear function of their target: any mix with one weight for both
    # keeps that relation, a mix with different weights breaks it.
    targets = np.random.default_rng(1).uniform(0, 1, (16, 1)).astype(np.float32)
    x = np.ones((16, 100, 100, 1), np.float32) * (20 + 200 * targets)[:, :, None, None]

    mixed_x, mixed_y = mixup(x, targets, alpha=0.2, rng=np.random.default_rng(0))

    assert mixed_x.shape == x.shape
    assert mixed_y.shape == targets.shape
    np.testing.assert_allclose(mixed_x[:, 0, 0, 0], 20 + 200 * mixed_y[:, 0], rtol=1e-5)
    assert np.allclose(mixed_x, mixed_x[:, :1, :1, :])  # still flat: one weight per image
    assert not np.allclose(mixed_y, targets), "nothing was mixed"
    assert mixed_y.min() >= targets.min() - 1e-6
    assert mixed_y.max() <= targets.max() + 1e-6


def test_augmentation_stays_float32_under_mixed_precision() -> None:
    import keras

    from training.augmentation import make_augmentation

    x = asymmetric(4)
    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        augmentation = make_augmentation(quarter_turns=True, degrees=5.0, shift=0.05, zoom=0.05, jitter=0.1, seed=0)
        out = augmentation(x, training=True)
    finally:
        keras.mixed_precision.set_global_policy(before)

    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    high = np.asarray(out)[(np.asarray(out) > 130) & (np.asarray(out) < 250)]
    # bfloat16 keeps 8 significant bits: between 128 and 256 it holds whole gray levels only
    assert (np.abs(high - np.round(high)) > 0.01).mean() > 0.5
