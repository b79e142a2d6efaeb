"""chainrule.special.erf, which GELU's exact form uses: against torch and math.erf in float64
(1 ulp), float32 kept and close to torch, special values."""

import math

import numpy as np
import pytest
import torch

import chainrule as cr
from helpers import Spy, assert_close, spying, to_torch


def erf_points(dtype):
    """Normal draws, a dense grid over ±7, tiny values and every branch boundary of fdlibm."""
    rng = np.random.default_rng(0)
    bounds = [2.0**-28, 0.84375, 1.25, 2.857142857142857, 2.8571434020996094, 6.0]
    special = [0.0, -0.0, 1e-300, 5e-324, 1e-30, 1e-10, 1e-5, 0.5, 1.0, 3.0, 5.9, 27.0, 1e300]
    values = np.concatenate([
        3.0 * rng.standard_normal(20000), np.linspace(-7.0, 7.0, 20001), special,
        [b * f for b in bounds for f in (1.0 - 1e-15, 1.0, 1.0 + 1e-15)],
    ])
    values = np.concatenate([values, -values])
    if dtype == np.float32:
        values = values[np.abs(values) < 1e38]
    return values.astype(dtype)


def test_erf_matches_torch_and_math_in_float64():
    x = erf_points(np.float64)
    ours = cr.special.erf(x)
    theirs = torch.erf(to_torch(x)).numpy()
    assert ours.dtype == np.float64
    assert_close(ours, theirs, 1e-15, "erf float64 vs torch", atol=1e-300)
    exact = np.array([math.erf(v) for v in x])
    ulps = np.abs(ours - exact) / np.spacing(np.maximum(np.abs(exact), 1e-300))
    assert ulps.max() <= 1.0, f"erf is {ulps.max()} ulps from math.erf at x = {x[ulps.argmax()]}"


def test_erf_float32_stays_float32_and_matches_torch():
    x = erf_points(np.float32)
    with spying() as log:
        ours = cr.special.erf(x.view(Spy))
        found = list(log)
    assert found == [] and ours.dtype == np.float32
    theirs = torch.erf(to_torch(x)).numpy()
    # Both are accurate to about one float32 ulp (6e-8 near ±1).
    assert_close(ours, theirs, 3e-7, "erf float32 vs torch", atol=1e-37)


def test_erf_special_values():
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 6.0, -40.0])
    y = cr.special.erf(x)
    assert y[0] == 0.0 and not np.signbit(y[0]) and y[1] == 0.0 and np.signbit(y[1])
    np.testing.assert_array_equal(y[2:4], [1.0, -1.0])
    assert np.isnan(y[4])
    np.testing.assert_array_equal(y[5:], [1.0, -1.0])
    with pytest.raises(TypeError, match="erf expected a float32 or float64 array, got dtype int64"):
        cr.special.erf(np.arange(3))
