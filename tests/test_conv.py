"""Conv2D against finite differences and against torch.nn.functional.conv2d, driven by one table.

Each row of CONV_CASES is (id, constructor arguments, input shape): stride 1 and 2, padding
valid / same / 2 / (1, 2), "same" with strides (Keras's rule, checked against an explicit
asymmetric F.pad then F.conv2d), dilation 2, kernels 1, 2, 3, 4, 5, (3, 2) and (2, 3), odd and
even image sizes, batch 1, several input and output channels, rank-3 (N, H, W) input. Every
row goes through gradcheck in float64 and equality with torch (y, grad x, grad W, grad b) in
float32 and float64.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
import torch.nn.functional as TF

import chainrule as cr
from chainrule import losses, optimizers
from chainrule.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from chainrule.layers.arguments import pad_amounts
from helpers import DTYPES, Spy, assert_close, rtol_for, to_torch


@dataclass(frozen=True)
class ConvCase:
    id: str
    kwargs: dict
    x_shape: tuple[int, ...]


CONV_CASES = [
    ConvCase("k3_valid", dict(filters=2, kernel_size=3), (2, 3, 7, 9)),
    ConvCase("k1", dict(filters=3, kernel_size=1), (2, 2, 5, 3)),
    ConvCase("k1_stride2", dict(filters=2, kernel_size=1, strides=2), (2, 2, 5, 4)),
    ConvCase("k3_same_batch1", dict(filters=3, kernel_size=3, padding="same"), (1, 2, 7, 9)),
    ConvCase("k5_same", dict(filters=2, kernel_size=5, padding="same"), (2, 2, 7, 9)),
    ConvCase("k5_valid_whole_image", dict(filters=2, kernel_size=5), (2, 2, 5, 5)),
    ConvCase("k32_same", dict(filters=2, kernel_size=(3, 2), padding="same"), (2, 3, 7, 9)),
    ConvCase("k2_same_even", dict(filters=2, kernel_size=2, padding="same"), (2, 2, 5, 7)),
    ConvCase("k3_pad2", dict(filters=2, kernel_size=3, padding=2), (2, 2, 5, 3)),
    ConvCase("k32_pad12", dict(filters=3, kernel_size=(3, 2), padding=(1, 2)), (2, 2, 7, 5)),
    ConvCase("k3_stride2", dict(filters=2, kernel_size=3, strides=2), (2, 2, 7, 9)),
    ConvCase("k3_stride2_pad1", dict(filters=2, kernel_size=3, strides=2, padding=1), (1, 3, 7, 9)),
    ConvCase("k5_stride2_pad2", dict(filters=2, kernel_size=5, strides=2, padding=2), (2, 2, 9, 7)),
    ConvCase("k32_stride21_pad12",
             dict(filters=2, kernel_size=(3, 2), strides=(2, 1), padding=(1, 2)), (2, 2, 7, 9)),
    ConvCase("k2_stride3_unread_edges", dict(filters=2, kernel_size=2, strides=3), (2, 2, 7, 9)),
    ConvCase("k3_dilation2", dict(filters=2, kernel_size=3, dilation=2), (2, 2, 7, 9)),
    ConvCase("k3_dilation2_same", dict(filters=2, kernel_size=3, dilation=2, padding="same"),
             (1, 2, 7, 9)),
    ConvCase("k23_dilation21_stride2_pad1",
             dict(filters=3, kernel_size=(2, 3), dilation=(2, 1), strides=2, padding=1),
             (2, 2, 7, 9)),
    ConvCase("no_bias", dict(filters=3, kernel_size=3, padding=1, use_bias=False), (2, 2, 5, 5)),
    ConvCase("rank3_same", dict(filters=3, kernel_size=3, padding="same"), (2, 7, 9)),
    ConvCase("rank3_stride2", dict(filters=2, kernel_size=(3, 2), strides=2), (1, 7, 9)),
    # "same" with strides: pads (top, bottom) per axis in the comments, from Keras's rule.
    ConvCase("k3_same_stride2_odd",  # 7: (1, 1); 9: (1, 1)
             dict(filters=2, kernel_size=3, strides=2, padding="same"), (2, 2, 7, 9)),
    ConvCase("k3_same_stride2_even",  # 8: (0, 1); 6: (0, 1)
             dict(filters=2, kernel_size=3, strides=2, padding="same"), (2, 3, 8, 6)),
    ConvCase("k2_same_stride2_even_kernel",  # 7: (0, 1); 8: (0, 0)
             dict(filters=2, kernel_size=2, strides=2, padding="same"), (2, 2, 7, 8)),
    ConvCase("k4_same_stride2_batch1",  # 9: (1, 2); 6: (1, 1)
             dict(filters=3, kernel_size=4, strides=2, padding="same"), (1, 2, 9, 6)),
    ConvCase("k5_same_stride3",  # 8: (1, 2); 10: (2, 2)
             dict(filters=2, kernel_size=5, strides=3, padding="same"), (2, 2, 8, 10)),
    ConvCase("k3_dilation2_same_stride2",  # span 5; 9: (2, 2); 8: (1, 2)
             dict(filters=2, kernel_size=3, dilation=2, strides=2, padding="same"),
             (2, 2, 9, 8)),
    ConvCase("k23_dilation12_same_stride21",  # 7: (0, 1); span 5, stride 1: (2, 2)
             dict(filters=2, kernel_size=(2, 3), dilation=(1, 2), strides=(2, 1),
                  padding="same"), (2, 2, 7, 7)),
    ConvCase("k1_same_stride2_no_padding",  # a 1×1 kernel never needs any: 5 → 3, 4 → 2
             dict(filters=2, kernel_size=1, strides=2, padding="same"), (2, 2, 5, 4)),
    ConvCase("rank3_k3_same_stride2", dict(filters=2, kernel_size=3, strides=2, padding="same"),
             (2, 8, 7)),
]
CASE_IDS = [case.id for case in CONV_CASES]


def make(case: ConvCase, dtype, seed: int = 0) -> tuple[Conv2D, np.ndarray]:
    """A Conv2D built in ``dtype`` with random W and b (b ≠ 0, so the forward check sees it)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(case.x_shape).astype(dtype)
    layer = Conv2D(**case.kwargs)
    layer.build(x.shape[1:], rng=rng, dtype=dtype)
    for p in layer.parameters():
        p.value[...] = rng.standard_normal(p.shape)
    return layer, x


def keras_same_pads(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    """Keras/TensorFlow's "same" padding of one axis, written here apart from the layer's."""
    total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def torch_conv(layer: Conv2D, x_t, params_t):
    """torch's conv2d with the layer's settings; a rank-3 x is one channel, as in ours.

    torch's own padding='same' serves stride 1; torch refuses it with a stride, so there the
    input is first padded explicitly (and asymmetrically) with F.pad by Keras's rule.
    """
    if x_t.ndim == 3:
        x_t = x_t.unsqueeze(1)
    bias = params_t[1] if layer.use_bias else None
    padding = layer.padding
    if padding == "same" and layer.strides != (1, 1):
        (top, bottom), (left, right) = (
            keras_same_pads(n, k, s, d) for n, k, s, d in zip(
                x_t.shape[2:], layer.kernel_size, layer.strides, layer.dilation, strict=True))
        x_t = TF.pad(x_t, (left, right, top, bottom))
        padding = 0
    with warnings.catch_warnings():
        # torch notes that 'same' with an even kernel pads a copy of the input: expected here.
        warnings.filterwarnings("ignore", "Using padding='same' with even kernel", UserWarning)
        return TF.conv2d(x_t, params_t[0], bias, stride=layer.strides, padding=padding,
                         dilation=layer.dilation)


# ---------------------------------------------------------------------- the table
@pytest.mark.parametrize("case", CONV_CASES, ids=CASE_IDS)
def test_gradcheck_float64(case):
    layer, x = make(case, np.float64)
    report = cr.gradcheck(layer, x, max_entries=40)
    assert [e.name for e in report.entries] == ["input", "W"] + (["b"] if layer.use_bias else [])
    # Conv2D is linear in x, W and b: no kinks, every sampled entry is compared.
    assert all(e.kinks == 0 for e in report.entries), str(report)
    assert report.ok, str(report)
    assert report.max_rel_error < 1e-6, str(report)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=CASE_IDS)
def test_matches_torch(case, dtype):
    layer, x = make(case, dtype, seed=1)
    y = layer.forward(x, training=True)
    g = np.random.default_rng(2).standard_normal(y.shape).astype(dtype)
    grad_x = layer.backward(g)

    x_t = to_torch(x, requires_grad=True)
    params_t = [to_torch(p.value, requires_grad=True) for p in layer.parameters()]
    y_t = torch_conv(layer, x_t, params_t)
    y_t.backward(to_torch(g))

    rtol = rtol_for(dtype)

    def check(ours, theirs, name):
        # Each entry is a sum of up to C·kh·kw (or N·H′·W′) products, and a sum that cancels
        # to near zero keeps the rounding error of its terms: the tolerance is rtol relative
        # to each entry, plus rtol relative to the array's largest entry.
        atol = rtol * float(np.abs(theirs.detach().numpy()).max())
        assert_close(ours, theirs, rtol, f"{case.id} {np.dtype(dtype)} {name}", atol=atol)

    check(y, y_t, "forward y")
    check(grad_x, x_t.grad, "grad_x")
    for p, p_t in zip(layer.parameters(), params_t, strict=True):
        check(p.grad, p_t.grad, f"{p.name}.grad")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=CASE_IDS)
def test_dtype_kept_and_shapes(case, dtype):
    layer, x = make(case, dtype)
    y = layer.forward(x, training=True)
    assert y.dtype == dtype and y.flags.c_contiguous
    assert y.shape == (x.shape[0], *layer.output_shape)
    assert layer.output_shape == layer.compute_output_shape(x.shape[1:])
    grad_x = layer.backward(np.ones_like(y))
    assert grad_x.dtype == dtype and grad_x.shape == x.shape and grad_x.flags.c_contiguous
    for p in layer.parameters():
        assert p.value.dtype == dtype and p.grad.dtype == dtype and p.grad.shape == p.shape
    assert layer.forward(x, training=False).dtype == dtype


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


def test_cache_holds_the_columns_at_training_and_nothing_at_inference():
    layer, x = make(CONV_CASES[0], np.float32)
    layer.forward(x, training=False)
    assert layer.cache is None
    with pytest.raises(RuntimeError, match=r"backward\(\) needs a preceding forward"):
        layer.backward(np.ones((x.shape[0], *layer.output_shape), np.float32))
    y = layer.forward(x, training=True)
    cols, x_shape, padded_shape = layer.cache
    n, _, h_out, w_out = y.shape
    assert cols.shape == (n * h_out * w_out, 3 * 3 * 3) and cols.dtype == np.float32
    assert cols.flags.c_contiguous
    n_, c_, h_, w_ = x.shape
    assert x_shape == x.shape and padded_shape == (n_, h_, w_, c_)  # channels-last, unpadded
    # An inference forward after a training one drops the training cache too.
    layer.forward(x, training=False)
    assert layer.cache is None
    with pytest.raises(RuntimeError, match="training=True"):
        layer.backward(np.ones_like(y))


def test_backward_never_changes_parameters_and_assigns_grads():
    layer, x = make(CONV_CASES[3], np.float64)
    before = [p.value.copy() for p in layer.parameters()]
    y = layer.forward(x, training=True)
    g = np.random.default_rng(0).standard_normal(y.shape)
    layer.backward(g)
    first = [p.grad.copy() for p in layer.parameters()]
    layer.backward(g)
    for p, value, grad in zip(layer.parameters(), before, first, strict=True):
        np.testing.assert_array_equal(p.value, value, err_msg=f"{p.name} changed")
        np.testing.assert_array_equal(p.grad, grad, err_msg=f"{p.name}.grad accumulated")


def test_no_input_gradient_skips_col2im_but_keeps_param_grads():
    layer, x = make(CONV_CASES[4], np.float32)
    y = layer.forward(x, training=True)
    g = np.random.default_rng(0).standard_normal(y.shape).astype(np.float32)
    layer.backward(g)
    full = [p.grad.copy() for p in layer.parameters()]
    assert layer.backward(g, need_input_grad=False) is None
    for p, grad in zip(layer.parameters(), full, strict=True):
        np.testing.assert_array_equal(p.grad, grad)


def test_float32_intermediates_never_float64():
    """Every NumPy operation inside forward and backward, not only the results, is float32."""
    layer, x = make(CONV_CASES[-4], np.float32)  # dilation, stride and padding
    for p in layer.parameters():
        p.value = p.value.view(Spy)
    Spy.log = []
    try:
        y = layer.forward(x.view(Spy), training=True)
        grad_x = layer.backward(np.ones(y.shape, np.float32).view(Spy))
        log = list(Spy.log)
    finally:
        Spy.log = []
    assert log == [], f"float64 inside Conv2D: {sorted(set(log))}"
    assert {y.dtype, grad_x.dtype, layer.W.grad.dtype, layer.b.grad.dtype} == {np.dtype(np.float32)}


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
