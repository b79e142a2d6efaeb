"""Dropout's mask: its values, rate and scaling, the identity at inference, fresh masks per
step that repeat with the seed. (Every gradient and torch check: the table, tests/cases.py.)"""

import numpy as np
import pytest

from chainrule import layers


def test_dropout_mask_scaling_and_identity_at_inference():
    rate = 0.3
    layer = layers.Dropout(rate, seed=0)
    x = np.ones((400, 500), np.float32)
    y = layer.forward(x, training=True)
    mask = layer.cache
    assert mask.dtype == np.float32 and y.dtype == np.float32
    scale = np.float32(1.0 / (1.0 - rate))
    assert set(np.unique(mask).tolist()) == {0.0, float(scale)}
    # E[m] = (1 − rate) / (1 − rate) = 1; the sample mean of 200 000 entries has std ≈ 0.0015.
    assert abs(float(mask.mean(dtype=np.float64)) - 1.0) < 0.01
    assert abs(float(np.mean(mask == 0)) - rate) < 0.01
    np.testing.assert_array_equal(y, x * mask)
    g = np.random.default_rng(0).standard_normal(y.shape).astype(np.float32)
    np.testing.assert_array_equal(layer.backward(g), g * mask)

    x = np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)
    y = layer.forward(x, training=False)
    np.testing.assert_array_equal(y, x)
    assert layer.cache is None


def test_dropout_masks_differ_between_steps_but_repeat_with_the_seed():
    x = np.ones((8, 16), np.float64)
    first = layers.Dropout(0.5, seed=4)
    second = layers.Dropout(0.5, seed=4)
    a1 = first.forward(x, training=True)
    a2 = first.forward(x, training=True)
    b1 = second.forward(x, training=True)
    assert not np.array_equal(a1, a2)
    np.testing.assert_array_equal(a1, b1)


def test_dropout_rate_out_of_range():
    with pytest.raises(ValueError, match=r"rate must lie in \[0, 1\), got 1.0"):
        layers.Dropout(1.0)
