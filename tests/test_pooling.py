"""MaxPool2D, AvgPool2D and GlobalAveragePool2D facts beyond the table (tests/cases.py, where
every pool size, stride, padding and shape row meets gradcheck and torch): ties and how they
route (as torch's), overlapping windows, padding that is never the maximum and counts as
zeros in the average, output shapes, config defaults, a model gradcheck, and the errors."""

from __future__ import annotations

import re

import numpy as np
import pytest

import chainrule as cr
from chainrule import layers, losses
from chainrule.layers import AvgPool2D, GlobalAveragePool2D, MaxPool2D
from helpers import DTYPES, assert_close_to_scale, to_torch
from torch_refs import torch_pool


# ---------------------------------------------------------------------- max pooling facts
@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_tie_sends_the_whole_gradient_to_the_first_maximum(dtype):
    """A constant window: every entry is the maximum; the top-left one gets all of g."""
    x = np.full((1, 1, 4, 4), 0.5, dtype)
    layer = MaxPool2D(2)
    y = layer.forward(x, training=True)
    g = np.array([[[[1.0, 2.0], [3.0, 4.0]]]], dtype)
    grad_x = layer.backward(g)
    expected = np.zeros_like(x)
    expected[0, 0, ::2, ::2] = g[0, 0]
    np.testing.assert_array_equal(y, np.full((1, 1, 2, 2), 0.5, dtype))
    np.testing.assert_array_equal(grad_x, expected)
    for _ in range(3):  # deterministic: the same choice every time
        layer.forward(x, training=True)
        np.testing.assert_array_equal(layer.backward(g), expected)


def test_max_pool_tie_in_row_major_order_not_the_top_left_corner():
    # Window [[0, 5], [5, 1]]: the maxima are offsets 1 and 2 (row-major); offset 1 wins.
    x = np.array([[[[0.0, 5.0], [5.0, 1.0]]]])
    layer = MaxPool2D(2)
    layer.forward(x, training=True)
    np.testing.assert_array_equal(layer.backward(np.ones((1, 1, 1, 1))),
                                  [[[[0.0, 1.0], [0.0, 0.0]]]])


@pytest.mark.parametrize("pool, strides", [(2, 2), (3, 1), (2, 1), (3, 2)])
def test_max_pool_ties_route_like_torch(pool, strides):
    """PyTorch's CPU kernel also keeps the first maximum: constant and two-level inputs with
    overlapping windows route identically (gradients accumulate on shared first maxima)."""
    rng = np.random.default_rng(pool * 10 + strides)
    for x in (np.ones((2, 2, 7, 9)), rng.integers(0, 2, (2, 2, 7, 9)).astype(np.float64)):
        layer = MaxPool2D(pool, strides, "same")
        y = layer.forward(x, training=True)
        g = rng.standard_normal(y.shape)
        grad_x = layer.backward(g)
        x_t = to_torch(x, requires_grad=True)
        torch_pool(layer).forward(x_t).backward(to_torch(g))
        assert_close_to_scale(grad_x, x_t.grad, 1e-12, f"ties k{pool} s{strides} grad_x")


def test_max_pool_overlapping_windows_accumulate_on_a_shared_maximum():
    # One large pixel in the middle of a 5×5 image is the max of all nine 3×3 windows.
    x = np.random.default_rng(0).uniform(-1, 0, (1, 1, 5, 5))
    x[0, 0, 2, 2] = 10.0
    layer = MaxPool2D(3, 1)
    y = layer.forward(x, training=True)
    np.testing.assert_array_equal(y, np.full((1, 1, 3, 3), 10.0))
    g = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    grad_x = layer.backward(g)
    expected = np.zeros_like(x)
    expected[0, 0, 2, 2] = 45.0
    np.testing.assert_array_equal(grad_x, expected)


@pytest.mark.parametrize("padding", ["same", 1])
def test_max_pool_padding_is_never_the_maximum(padding):
    """With every pixel negative, a zero padding would win the border windows; −∞ never does.
    Each output sends its gradient to exactly one real pixel, so the totals agree."""
    x = -np.random.default_rng(0).uniform(1, 2, (2, 3, 5, 6))
    layer = MaxPool2D(3, 2, padding)
    y = layer.forward(x, training=True)
    assert (y <= -1).all()
    g = np.random.default_rng(1).standard_normal(y.shape)
    grad_x = layer.backward(g)
    np.testing.assert_allclose(grad_x.sum(axis=(2, 3)), g.sum(axis=(2, 3)), rtol=1e-12)
    assert np.count_nonzero(grad_x) <= y.size


def test_avg_pool_counts_padding_as_zeros():
    x = np.ones((1, 1, 3, 3))
    y = AvgPool2D(3, 1, 1).forward(x)
    # The corner window sees 4 real ones out of 9, an edge window 6, the centre 9.
    np.testing.assert_allclose(y[0, 0], np.array([[4, 6, 4], [6, 9, 6], [4, 6, 4]]) / 9.0)


def test_same_padding_output_is_ceil_of_size_over_stride():
    for size in (5, 6, 7):
        for k, s in ((2, 1), (3, 1), (2, 2), (3, 2), (3, 3)):
            layer = MaxPool2D(k, s, "same")
            expected = -(-size // s)
            assert layer.compute_output_shape((2, size, size + 1)) == (
                2, expected, -(-(size + 1) // s))


def test_global_average_pool_backward_is_a_fresh_writable_array():
    layer = GlobalAveragePool2D()
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    layer.forward(x, training=True)
    grad_x = layer.backward(np.ones((2, 3)))
    assert grad_x.flags.writeable and grad_x.flags.c_contiguous
    np.testing.assert_array_equal(grad_x, np.full(x.shape, 1 / 20))


# ---------------------------------------------------------------------- shapes and config
@pytest.mark.parametrize("layer, sample, expected", [
    (MaxPool2D(), (3, 28, 28), (3, 14, 14)),
    (MaxPool2D(2), (3, 7, 9), (3, 3, 4)),
    (MaxPool2D(2, padding="same"), (3, 7, 9), (3, 4, 5)),
    (AvgPool2D(3, 1, 1), (2, 7, 9), (2, 7, 9)),
    (AvgPool2D(3, 2), (7, 9), (3, 4)),
    (GlobalAveragePool2D(), (16, 5, 5), (16,)),
], ids=["max-default", "max-odd", "max-same", "avg-pad1", "avg-rank3", "global"])
def test_compute_output_shape(layer, sample, expected):
    assert layer.compute_output_shape(sample) == expected
    layer.build(sample)
    assert layer.output_shape == expected
    y = layer.forward(np.zeros((2, *sample), np.float32))
    assert y.shape == (2, *expected)


def test_config_resolves_defaults():
    assert MaxPool2D().get_config() == {
        "name": "maxpool2d", "pool_size": [2, 2], "strides": [2, 2], "padding": "valid"}
    assert AvgPool2D(3, 1, 1).get_config()["padding"] == [1, 1]


def test_in_a_sequential_with_model_gradcheck():
    """Pooling inside a model: the float64 clone built from the config checks out."""
    model = cr.Sequential([
        layers.Dense(6, input_shape=(2, 6, 5)),  # acts on the last axis: (N, 2, 6, 6)
        layers.Tanh(),
        MaxPool2D(3, 1, "same"),
        AvgPool2D(2),
        GlobalAveragePool2D(),
        layers.Dense(3),
    ], dtype="float64", seed=0)
    assert model.output_shape == (3,)
    model.compile("sgd", losses.SparseCategoricalCrossEntropy(from_logits=True))
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 2, 6, 5)), rng.integers(0, 3, 4)
    report = cr.gradcheck(model, x, y)
    assert report.ok and report.max_rel_error < 1e-6, str(report)
    history = model.fit(x, y, epochs=2, batch_size=2, verbose=0, seed=0)
    assert np.isfinite(history.history["loss"]).all()


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize("factory, message", [
    (lambda: MaxPool2D(0), r"MaxPool2D: pool_size must be a positive integer or a pair of "
                           r"them, got 0"),
    (lambda: AvgPool2D((2, 2, 2)), r"AvgPool2D: pool_size must be a positive integer"),
    (lambda: MaxPool2D(2, 0), r"MaxPool2D: strides must be a positive integer"),
    (lambda: MaxPool2D(2, 1.5), r"strides must be a positive integer or a pair of them, got 1.5"),
    (lambda: MaxPool2D(2, padding="full"), r"padding must be 'valid', 'same', an int or a pair "
                                           r"\(ph, pw\), got 'full'"),
    (lambda: AvgPool2D(2, padding=-1), r"padding must be a non-negative integer"),
    (lambda: MaxPool2D(3, padding=2), r"padding \(2, 2\) must be at most half of pool_size "
                                      r"\(3, 3\)"),
    (lambda: AvgPool2D((2, 4), padding=(1, 3)), r"padding \(1, 3\) must be at most half"),
])
def test_constructor_errors(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
def test_wrong_rank(cls):
    # An unbuilt layer checks the sample shape while building (batch shown as N), a built one
    # shows the received batch.
    layer = cls(name="pool")
    label = f"{cls.__name__} 'pool'"
    with pytest.raises(ValueError, match=re.escape(
            f"{label} expected input of shape (N, C, H, W) or (N, H, W), got input of shape "
            "(32, 784); reshape flat images with x.reshape(-1, 1, 28, 28)")):
        layer.forward(np.zeros((32, 784), np.float32))
    layer.build((1, 4, 4))
    with pytest.raises(ValueError, match=re.escape("got input of shape (2, 1, 3, 4, 4)")):
        layer.forward(np.zeros((2, 1, 3, 4, 4), np.float32))
    with pytest.raises(ValueError, match=re.escape("got input of shape (32, 784); reshape")):
        layer.forward(np.zeros((32, 784), np.float32))


def test_pool_larger_than_the_input():
    layer = MaxPool2D(3, name="pool")
    layer.build((1, 4, 4))
    with pytest.raises(ValueError, match=re.escape(
            "MaxPool2D 'pool': pool_size (3, 3) is larger than the padded input 2×5 (input of "
            "shape (4, 1, 2, 5), padding 'valid'); use a smaller pool_size or padding='same'")):
        layer.forward(np.zeros((4, 1, 2, 5), np.float32))
    # padding="same" always fits, and a Sequential refuses at build time.
    assert MaxPool2D(3, padding="same").forward(np.zeros((4, 1, 2, 5), np.float32)).shape == (
        4, 1, 1, 2)
    with pytest.raises(ValueError, match=r"AvgPool2D 'avgpool2d_1': pool_size \(4, 4\) is "
                                         r"larger than the padded input 3×3"):
        cr.Sequential([layers.Identity(input_shape=(2, 3, 3)), AvgPool2D(4)])
    with pytest.raises(ValueError, match=r"larger than the padded input 3×3 \(input of shape "
                                         r"\(N, 2, 3, 3\)"):
        cr.Sequential([AvgPool2D(4, input_shape=(2, 3, 3))])


def test_global_average_pool_wrong_rank():
    layer = GlobalAveragePool2D(name="gap")
    layer.build((1, 4, 4))
    with pytest.raises(ValueError, match=re.escape(
            "GlobalAveragePool2D 'gap' expected input of shape (N, C, H, W), got input of shape "
            "(2, 5, 5); for one channel use x[:, None]")):
        layer.forward(np.zeros((2, 5, 5), np.float32))
    with pytest.raises(ValueError, match=re.escape("got input of shape (2, 16); reshape flat "
                                                   "images with x.reshape(-1, 1, 4, 4)")):
        layer.forward(np.zeros((2, 16), np.float32))


@pytest.mark.parametrize("factory", [MaxPool2D, AvgPool2D, GlobalAveragePool2D])
def test_base_class_input_checks_apply(factory):
    with pytest.raises(TypeError, match="expected float32 or float64 input, got dtype int64"):
        factory().forward(np.zeros((1, 1, 4, 4), np.int64))
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="received non-finite input: 1 of 16 values"):
        factory().forward(x)
