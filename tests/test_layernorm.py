"""LayerNorm facts beyond the table (tests/cases.py): its input gradient is orthogonal to the
ones and (up to ε) to x̂, and its errors."""

import re

import numpy as np
import pytest

from chainrule import layers


@pytest.mark.parametrize("eps", [1e-5, 1e-14])
def test_layernorm_input_gradient_is_orthogonal_to_ones_and_x_hat(eps):
    """Shifting a row leaves x̂ unchanged, so Σⱼ dL/dxⱼ = 0; scaling it too, up to ε, so
    Σⱼ x̂ⱼ dL/dxⱼ = (ε/(σ² + ε))(1/σ) Σⱼ ĝⱼ x̂ⱼ (see the docstring)."""
    rng = np.random.default_rng(0)
    layer = layers.LayerNorm(eps=eps)
    layer.build((5, 7), dtype=np.float64)
    layer.gamma.value[:] = rng.standard_normal(7)
    x = 3.0 + 2.0 * rng.standard_normal((4, 5, 7))
    layer.forward(x, training=True)
    x_hat, inv_std = layer.cache  # read before backward, which may release it
    g = rng.standard_normal(x.shape)
    grad_x = layer.backward(g)
    np.testing.assert_allclose(grad_x.sum(axis=-1), 0.0, atol=1e-13)
    var = x.var(axis=-1, keepdims=True)
    g_hat = g * layer.gamma.value
    expected = (eps / (var + eps)) * inv_std * np.sum(g_hat * x_hat, axis=-1, keepdims=True)
    np.testing.assert_allclose(np.sum(grad_x * x_hat, axis=-1, keepdims=True), expected,
                               rtol=1e-6, atol=1e-13)


def test_layernorm_errors():
    layer = layers.LayerNorm(name="ln")
    with pytest.raises(ValueError, match=re.escape(
            "LayerNorm 'ln' expected input of shape (N, D) or (N, T, D), got a 1-D batch of "
            "shape (5,)")):
        layer.forward(np.zeros(5, np.float32))
    layer.forward(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match=re.escape(
            "LayerNorm 'ln' expected 4 features on the last axis, got input of shape (2, 3, 5)")):
        layer.forward(np.zeros((2, 3, 5), np.float32))
    with pytest.raises(ValueError, match="eps must be positive, got 0.0"):
        layers.LayerNorm(eps=0)
