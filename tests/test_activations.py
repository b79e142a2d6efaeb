"""Activation facts beyond the table (tests/cases.py): saturated ends that stay finite, the
gradient at ReLU's kink, and GELU against torch to 1e-12 on a dense grid."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import chainrule as cr
from chainrule import layers
from helpers import DTYPES, assert_close, assert_close_to_scale, to_torch


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_and_tanh_finite_at_1e4(dtype):
    x = np.array([[1e4, -1e4, 1e3, -1e3, 88.0, -88.0, 0.0]], dtype=dtype)
    for layer in (layers.Sigmoid(), layers.Tanh()):
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            y = layer.forward(x, training=True)
            grad_x = layer.backward(np.ones_like(y))
        assert np.isfinite(y).all() and np.isfinite(grad_x).all()
        assert y.dtype == dtype and grad_x.dtype == dtype
        assert y[0, 0] == 1.0 and y[0, 1] == (0.0 if isinstance(layer, layers.Sigmoid) else -1.0)
        assert grad_x[0, 0] == 0.0 and grad_x[0, 1] == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_large_logits_finite_and_normalised(dtype):
    x = np.array([[1e4, -1e4, 0.0], [1e4, 1e4, -1e4], [-1e4, -1e4, -1e4]], dtype=dtype)
    layer = layers.Softmax()
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        s = layer.forward(x, training=True)
        grad_x = layer.backward(np.ones_like(s))
    np.testing.assert_array_equal(s, np.array([[1, 0, 0], [0.5, 0.5, 0], [1 / 3] * 3], dtype))
    assert np.isfinite(grad_x).all()


def test_leaky_relu_and_relu_at_zero_follow_torch():
    x = np.array([[0.0, -0.0, 1.0, -1.0]])
    for ours, theirs in ((layers.ReLU(), torch.relu),
                         (layers.LeakyReLU(0.2), lambda t: TF.leaky_relu(t, 0.2))):
        ours.forward(x, training=True)
        grad_x = ours.backward(np.ones_like(x))
        x_t = to_torch(x, requires_grad=True)
        theirs(x_t).backward(torch.ones_like(x_t))
        assert_close(grad_x, x_t.grad, 0.0, f"{type(ours).__name__} grad at 0")


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_matches_torch_to_1e12_in_float64(approximate):
    """Both forms on a dense grid, forward and derivative, entry-wise to 1e-12 on [−3, 6]
    (with an absolute 1e-16 where the derivative crosses 0, at GELU's minimum x ≈ −0.75).

    Below −3 the value is a product with 1 + erf(x/√2) (1 + tanh u), which cancels, and the
    tanh form's derivative is a difference of two terms 100× larger than itself: one ulp of
    tanh (np.tanh and torch's differ by that) then moves the result by more than 1e-12 of
    itself, in torch as here. There both are compared relative to the array's scale.
    """
    layer = layers.GELU(approximate)

    def entrywise(ours, theirs, rtol, name):
        assert_close(ours, theirs, rtol, name, atol=1e-16)

    for lo, hi, compare in ((-3.0, 6.0, entrywise), (-12.0, -3.0, assert_close_to_scale)):
        x = np.linspace(lo, hi, 90001)
        y = layer.forward(x, training=True)
        slope = layer.backward(np.ones_like(x))
        x_t = to_torch(x, requires_grad=True)
        y_t = TF.gelu(x_t, approximate=approximate)
        y_t.backward(torch.ones_like(x_t))
        compare(y, y_t, 1e-12, f"gelu {approximate} y on [{lo}, {hi}]")
        compare(slope, x_t.grad, 1e-12, f"gelu {approximate} dy/dx on [{lo}, {hi}]")


def test_gelu_is_an_activation_name():
    model = cr.Sequential([layers.Dense(3, activation="gelu", input_shape=(2,))])
    assert [type(layer).__name__ for layer in model.layers] == ["Dense", "GELU"]
    assert model.layers[1].approximate == "none"
    with pytest.raises(ValueError, match="approximate must be 'none' .* or 'tanh', got 'erf'"):
        layers.GELU("erf")
