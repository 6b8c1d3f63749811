"""The gate's special functions against SciPy's (a dev dependency, not the service's)."""

from __future__ import annotations

import numpy as np
import pytest

from service.core.quality.beta import log_beta, log_betainc, log_gamma

special = pytest.importorskip("scipy.special")


def test_log_gamma_and_log_beta_equal_scipys() -> None:
    x = np.concatenate([np.linspace(0.05, 30, 600), np.geomspace(30, 1e6, 200)])
    np.testing.assert_allclose(log_gamma(x), special.gammaln(x), rtol=1e-12, atol=1e-12)
    a, b = np.meshgrid(np.arange(1, 400, 7.0), np.arange(1, 400, 11.0))
    np.testing.assert_allclose(log_beta(a, b), special.betaln(a, b), rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("x", [0.5, 0.1, 0.9])
def test_log_betainc_equals_scipys_wherever_scipys_value_is_a_normal_float(x: float) -> None:
    rng = np.random.default_rng(7)
    a = np.concatenate([rng.integers(1, 5000, 4000), rng.uniform(0.5, 40, 1000)])
    b = np.concatenate([rng.integers(1, 5000, 4000), rng.uniform(0.5, 40, 1000)])
    with np.errstate(divide="ignore"):
        expected = np.log(special.betainc(a, b, x))
    normal = expected > -700  # below, SciPy's value is a subnormal float or 0; ours stays exact in log space
    assert normal.sum() > 1000
    np.testing.assert_allclose(log_betainc(a, b, x)[normal], expected[normal], rtol=1e-9, atol=1e-12)


def test_log_betainc_goes_on_below_the_smallest_float() -> None:
    # I_(1/2)(a + k, a) shrinks geometrically in k: far below 1e-308 its log still follows the same line.
    values = log_betainc(3000.0 + np.array([2000, 4000, 6000, 8000]), np.full(4, 3000.0), 0.5)
    steps = np.diff(values)
    assert np.all(np.isfinite(values))
    assert values[-1] < -1000
    assert np.all(steps < 0)
