"""Conv2D facts beyond the table (tests/cases.py, where every stride, padding, dilation and
kernel row meets gradcheck and torch): weight shapes and the output size formula, the "same"
padding rule it shares with pooling (Keras's), rank-3 input, the column cache, config, saving,
a model gradcheck, and the errors."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

import chainrule as cr
from cases import CASES, make
from chainrule import losses, optimizers
from chainrule.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from chainrule.layers.arguments import pad_amounts
from torch_refs import keras_same_pads

ROWS = {case.id: case for case in CASES}


# ---------------------------------------------------------------------- the layer's facts
def test_weights_shapes_names_and_output_size_formula():
    layer = Conv2D(5, (3, 2), strides=(2, 1), padding=(1, 2), dilation=(1, 3))
    layer.build((4, 11, 10), rng=np.random.default_rng(0))
    assert [p.name for p in layer.parameters()] == ["W", "b"]
    assert layer.W.shape == (5, 4, 3, 2) and layer.b.shape == (5,)
    assert layer.W.dtype == np.float32 and not layer.b.value.any()
    # H′ = ⌊(H + 2p − d(k − 1) − 1)/s⌋ + 1:
    #      ⌊(11 + 2 − 2 − 1)/2⌋ + 1 = 6  and  ⌊(10 + 4 − 3 − 1)/1⌋ + 1 = 11
    assert layer.output_shape == (5, 6, 11)
    assert layer.count_params() == 5 * 4 * 3 * 2 + 5
    # he_normal with fan_in = C·kh·kw = 24: std √(2/24) ≈ 0.29
    big = Conv2D(64, 3)
    big.build((32, 5, 5), rng=np.random.default_rng(0))
    assert abs(float(big.W.value.std()) - (2.0 / (32 * 9)) ** 0.5) < 0.005


@pytest.mark.parametrize("kernel_size", [1, 2, 3, 4, 5, (3, 2), (2, 5)])
@pytest.mark.parametrize("dilation", [1, 2])
def test_same_padding_keeps_size_and_puts_the_extra_bottom_right(kernel_size, dilation):
    layer = Conv2D(2, kernel_size, padding="same", dilation=dilation)
    layer.build((1, 7, 8))
    assert layer.output_shape == (2, 7, 8)
    pads = layer._pads(7, 8)
    for (before, after), k, d in zip(pads, layer.kernel_size, layer.dilation, strict=True):
        assert before + after == d * (k - 1) and after - before in (0, 1)


@pytest.mark.parametrize("strides", [1, 2, 3, (2, 1)])
@pytest.mark.parametrize("kernel_size", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("dilation", [1, 2])
def test_same_padding_with_strides_gives_ceil_size_and_keras_pads(strides, kernel_size, dilation):
    for h, w in [(7, 9), (8, 6), (1, 2), (28, 28)]:
        layer = Conv2D(2, kernel_size, strides=strides, padding="same", dilation=dilation)
        layer.build((1, h, w))
        s = layer.strides
        assert layer.output_shape == (2, math.ceil(h / s[0]), math.ceil(w / s[1]))
        expected = tuple(keras_same_pads(n, kernel_size, si, dilation)
                         for n, si in zip((h, w), s, strict=True))
        assert layer._pads(h, w) == expected


def test_conv_and_pooling_share_one_same_padding_rule():
    """A Conv2D and a MaxPool2D with the same window and stride pad alike, and the rule is
    Keras's: the odd row at the bottom, the odd column on the right."""
    assert pad_amounts("same", (8, 7), (3, 3), (2, 2)) == ((0, 1), (1, 1))
    assert pad_amounts("same", (7, 10), (4, 4), (3, 3)) == ((1, 2), (1, 2))
    assert pad_amounts("same", (9, 9), (3, 3), (2, 2), (2, 2)) == ((2, 2), (2, 2))
    assert pad_amounts("same", (2, 2), (3, 3), (4, 4)) == ((0, 1), (0, 1))
    assert pad_amounts("valid", (8, 7), (3, 3), (2, 2)) == ((0, 0), (0, 0))
    assert pad_amounts((1, 2), (8, 7), (3, 3), (2, 2)) == ((1, 1), (2, 2))
    for k, s in [(2, 2), (3, 2), (3, 1), (4, 3)]:
        for size in [(7, 9), (8, 6), (5, 5)]:
            conv, pool = Conv2D(1, k, strides=s, padding="same"), MaxPool2D(k, s, "same")
            assert conv._pads(*size) == pool._pads(*size) == pad_amounts(
                "same", size, (k, k), (s, s))
            conv.build((1, *size))
            pool.build((1, *size))
            assert conv.output_shape[1:] == pool.output_shape[1:]


def test_strided_same_conv_in_a_model_builds_trains_and_saves(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 1, 9, 8)).astype(np.float32)
    y = rng.integers(0, 2, 12)
    model = cr.Sequential([Conv2D(3, 3, strides=2, padding="same", input_shape=(1, 9, 8)),
                           ReLU(), Flatten(), Dense(2)], seed=0)
    assert model.layers[0].output_shape == (3, 5, 4)
    model.compile("adam", losses.SparseCategoricalCrossEntropy(from_logits=True))
    model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    model.save(tmp_path / "m.npz")
    assert np.array_equal(cr.load_model(tmp_path / "m.npz").predict(x), model.predict(x))


def test_rank3_input_equals_one_channel_rank4():
    rng = np.random.default_rng(3)
    x3 = rng.standard_normal((3, 7, 9)).astype(np.float32)
    a = Conv2D(4, 3, padding="same")
    a.build((7, 9), rng=np.random.default_rng(0))
    b = Conv2D(4, 3, padding="same")
    b.build((1, 7, 9), rng=np.random.default_rng(0))
    np.testing.assert_array_equal(a.W.value, b.W.value)
    ya = a.forward(x3, training=True)
    yb = b.forward(x3[:, None], training=True)
    assert ya.shape == yb.shape == (3, 4, 7, 9)
    np.testing.assert_array_equal(ya, yb)
    g = rng.standard_normal(ya.shape).astype(np.float32)
    gxa, gxb = a.backward(g), b.backward(g)
    assert gxa.shape == (3, 7, 9) and gxb.shape == (3, 1, 7, 9)
    np.testing.assert_array_equal(gxa, gxb[:, 0])
    np.testing.assert_array_equal(a.W.grad, b.W.grad)
    np.testing.assert_array_equal(a.b.grad, b.b.grad)
    # A layer built for one channel takes either form.
    np.testing.assert_array_equal(a.forward(x3[:, None]), b.forward(x3))


def test_cache_holds_the_columns_at_training():
    layer, x = make(ROWS["conv2d-k3_valid"], np.float32, 0)
    y = layer.forward(x, training=True)
    algorithm, cols, x_shape, padded_shape = layer.cache
    assert algorithm == "im2col"  # stride 1, but a 3×3 kernel on 7×9 images: im2col is cheaper
    n, _, h_out, w_out = y.shape
    assert cols.shape == (n * h_out * w_out, 3 * 3 * 3) and cols.dtype == np.float32
    assert cols.flags.c_contiguous
    n_, c_, h_, w_ = x.shape
    assert x_shape == x.shape and padded_shape == (n_, h_, w_, c_)  # channels-last, unpadded


# ---------------------------------------------------------------------- config and saving
def test_config_is_json_and_round_trips():
    layer = Conv2D(6, (3, 2), strides=(2, 1), padding=(1, 0), dilation=2, use_bias=False,
                   kernel_initializer="glorot_uniform", name="c")
    config = layer.get_config()
    assert config == {
        "name": "c", "filters": 6, "kernel_size": [3, 2], "strides": [2, 1], "padding": [1, 0],
        "dilation": [2, 2], "use_bias": False, "kernel_initializer": "glorot_uniform",
        "bias_initializer": "zeros",
    }
    twin = Conv2D.from_config(json.loads(json.dumps(config)))
    assert twin.get_config() == config
    same = Conv2D(2, 3, padding="same", input_shape=(1, 5, 5))
    assert Conv2D.from_config(json.loads(json.dumps(same.get_config()))).get_config() == (
        same.get_config())
    assert same.get_config()["padding"] == "same"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sequential_cnn_fit_save_load_identical_predictions(tmp_path, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, 2, 8, 7)).astype(np.float32)
    y = (x[:, 0].mean(axis=(1, 2)) > 0).astype(np.int64)
    model = cr.Sequential(
        [Conv2D(4, 3, padding="same"), ReLU(), Conv2D(3, (3, 2), strides=2, padding=1), ReLU(),
         Flatten(), Dense(2)],
        dtype=dtype, seed=0, name="cnn",
    )
    model.compile(optimizers.Adam(0.01), losses.SparseCategoricalCrossEntropy(from_logits=True))
    history = model.fit(x, y, epochs=3, batch_size=8, seed=0, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    path = tmp_path / "cnn.npz"
    model.save(path)
    loaded = cr.load_model(path)
    assert loaded.get_config() == model.get_config()
    assert loaded.summary(print_fn=None) == model.summary(print_fn=None)
    assert np.array_equal(loaded.predict(x), model.predict(x))
    for a, b in zip(loaded.get_weights(), model.get_weights(), strict=True):
        assert a.dtype == b.dtype == np.dtype(dtype) and np.array_equal(a, b)


def test_model_gradcheck_through_conv_relu_flatten_dense():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 6, 5))
    y = np.array([0, 2, 1])
    model = cr.Sequential([Conv2D(2, 3, padding="same"), ReLU(), Flatten(), Dense(3)], seed=1)
    model.compile("sgd", losses.SparseCategoricalCrossEntropy(from_logits=True))
    report = cr.gradcheck(model, x, y, max_entries=30)
    assert report.ok, str(report)


# ---------------------------------------------------------------------- errors
def test_flat_input_suggests_reshape():
    layer = Conv2D(8, 3, name="conv")
    expected = ("Conv2D 'conv' expected input of shape (N, C, H, W) or (N, H, W), got input of "
                "shape (32, 784); reshape flat images with x.reshape(-1, 1, 28, 28) or "
                "x.reshape(-1, 28, 28)")
    with pytest.raises(ValueError, match=re.escape(expected)):
        layer.forward(np.zeros((32, 784), np.float32))
    layer.build((1, 28, 28))
    with pytest.raises(ValueError, match=re.escape("got input of shape (32, 784); reshape")):
        layer.forward(np.zeros((32, 784), np.float32))
    with pytest.raises(ValueError, match=r"got input of shape \(2, 1, 1, 4, 4\)$"):
        layer.forward(np.zeros((2, 1, 1, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"shape \(4, 10\); reshape flat images to "
                                         r"\(N, C, H, W\) or \(N, H, W\)$"):
        Conv2D(2, 1).forward(np.zeros((4, 10), np.float32))


def test_wrong_channel_count():
    layer = Conv2D(8, 3, name="conv_1")
    layer.build((3, 28, 28))
    with pytest.raises(ValueError, match=re.escape(
            "Conv2D 'conv_1' expected 3 input channels on axis 1, got input of shape "
            "(16, 4, 28, 28)")):
        layer.forward(np.zeros((16, 4, 28, 28), np.float32))
    with pytest.raises(ValueError, match=re.escape(
            "expected 3 input channels on axis 1, got input of shape (16, 28, 28) (a rank-3 "
            "input (N, H, W) is one channel)")):
        layer.forward(np.zeros((16, 28, 28), np.float32))


def test_kernel_larger_than_padded_input():
    with pytest.raises(ValueError, match=re.escape(
            "Conv2D 'conv2d': kernel (5, 5) with dilation (1, 1) spans 5×5 pixels, larger than "
            "the padded input 4×6 (input of shape (N, 2, 4, 6), padding 'valid')")):
        Conv2D(3, 5).build((2, 4, 6))
    with pytest.raises(ValueError, match=r"kernel \(3, 3\) with dilation \(2, 2\) spans 5×5 "
                                         r"pixels, larger than the padded input 6×4 \(input of "
                                         r"shape \(2, 1, 4, 2\), padding \(1, 1\)\)"):
        Conv2D(3, 3, dilation=2, padding=1).forward(np.zeros((2, 1, 4, 2), np.float32))
    built = Conv2D(3, 3, dilation=2, padding=1)
    built.build((1, 5, 5))
    with pytest.raises(ValueError, match=r"larger than the padded input 6×4 \(input of shape "
                                         r"\(2, 1, 4, 2\), padding \(1, 1\)\)"):
        built.forward(np.zeros((2, 1, 4, 2), np.float32))
    Conv2D(3, 5, padding=1).build((1, 3, 3))  # 5×5 fits the padded 5×5


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(filters=0, kernel_size=3), "filters must be a positive integer, got 0"),
    (dict(filters=2.5, kernel_size=3), "filters must be a positive integer, got 2.5"),
    (dict(filters=True, kernel_size=3), "filters must be a positive integer, got True"),
    (dict(filters=2, kernel_size=0), "kernel_size must be a positive integer or a pair of them, "
                                     "got 0"),
    (dict(filters=2, kernel_size=(3,)), r"kernel_size must be .* got \(3,\)"),
    (dict(filters=2, kernel_size=(3, -1)), r"kernel_size must be .* got \(3, -1\)"),
    (dict(filters=2, kernel_size=3, strides=0), "strides must be a positive integer"),
    (dict(filters=2, kernel_size=3, dilation=(1, 0)), "dilation must be a positive integer"),
    (dict(filters=2, kernel_size=3, padding="full"),
     "padding must be 'valid', 'same', an int or a pair \\(ph, pw\\), got 'full'"),
    (dict(filters=2, kernel_size=3, padding=-1),
     "padding must be a non-negative integer or a pair of them, got -1"),
    (dict(filters=2, kernel_size=3, padding=(1, -2)), "padding must be a non-negative integer"),
    (dict(filters=2, kernel_size=3, kernel_initializer="he"), "unknown initializer 'he'"),
])
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Conv2D(**kwargs)


def test_inference_on_a_large_batch_goes_through_in_slices_with_the_same_result(monkeypatch):
    """At inference a batch whose X_col would pass conv.INFERENCE_COLUMN_BYTES is convolved in
    slices of samples (bounded memory), giving what one product gives; training keeps one X_col
    for the backward."""
    from chainrule.layers import conv as conv_module

    rng = np.random.default_rng(0)
    layer = Conv2D(6, 3, padding="same", use_bias=True)
    x = rng.standard_normal((10, 2, 7, 7))
    whole = layer.forward(x)
    calls = []
    real = Conv2D._im2col
    monkeypatch.setattr(Conv2D, "_im2col",
                        lambda self, batch: calls.append(len(batch)) or real(self, batch))
    per_sample = 7 * 7 * 9 * 2 * x.itemsize
    monkeypatch.setattr(conv_module, "INFERENCE_COLUMN_BYTES", 3 * per_sample)
    sliced = layer.forward(x)
    assert calls == [3, 3, 3, 1]
    np.testing.assert_allclose(sliced, whole, rtol=1e-12, atol=1e-12)
    assert sliced.shape == whole.shape and sliced.flags.c_contiguous
    calls.clear()
    layer.forward(x, training=True)
    assert calls == [10]
