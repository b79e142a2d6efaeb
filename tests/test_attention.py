"""CausalSelfAttention facts beyond the table (tests/cases.py): causal, no cubic array, errors."""

import re
import tracemalloc

import numpy as np
import pytest

from chainrule import layers


def test_attention_is_causal():
    """Changing positions after i changes nothing at positions ≤ i, and dL/dx at a later
    position is exactly 0 for a loss on an earlier output."""
    rng = np.random.default_rng(0)
    layer = layers.CausalSelfAttention(2)
    x = rng.standard_normal((2, 6, 4))
    y = layer.forward(x, training=True)
    changed = x.copy()
    changed[:, 3:] += rng.standard_normal((2, 3, 4))
    np.testing.assert_array_equal(layer.forward(changed)[:, :3], y[:, :3])
    g = np.zeros_like(y)
    g[:, 2] = 1.0
    layer.forward(x, training=True)
    grad_x = layer.backward(g)
    assert np.all(grad_x[:, 3:] == 0.0) and np.all(grad_x[:, :3] != 0.0)


def test_attention_never_makes_a_cubic_array():
    """No (N, H, T, T, T) array: the softmax backward is a row sum, not a Jacobian per row. The
    whole step peaks far below the size of one such array."""
    n, heads, t, e = 2, 2, 48, 8
    layer = layers.CausalSelfAttention(heads)
    x = np.random.default_rng(0).standard_normal((n, t, e))
    g = np.ones((n, t, e))
    layer.backward(layer.forward(x, training=True) * 0 + g)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        layer.forward(x, training=True)
        layer.backward(g)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    cubic = n * heads * t * t * t * 8
    assert peak < cubic / 8, f"attention step peaked at {peak} bytes (one N·H·T³ array: {cubic})"


def test_attention_errors():
    layer = layers.CausalSelfAttention(3, name="attn")
    with pytest.raises(ValueError, match=re.escape(
            "CausalSelfAttention 'attn': the embedding width E = 8 of input (2, 4, 8) is not "
            "divisible by heads = 3")):
        layer.forward(np.zeros((2, 4, 8), np.float32))
    with pytest.raises(ValueError, match=re.escape(
            "CausalSelfAttention 'attn' expected input of shape (N, T, E), got input of shape "
            "(2, 9)")):
        layer.forward(np.zeros((2, 9), np.float32))
    with pytest.raises(ValueError, match=r"dropout must lie in \[0, 1\), got 1.0"):
        layers.CausalSelfAttention(2, dropout=1.0)
    with pytest.raises(ValueError, match="heads must be a positive integer, got 0"):
        layers.CausalSelfAttention(0)
