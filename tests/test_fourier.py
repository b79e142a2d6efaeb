"""Conv2D's frequency-domain path (layers.fourier) beyond the table's "fourier_…" rows (where it
meets gradcheck and torch): it equals the im2col path in float64 to rounding, keeps float32 in
float32, is what "auto" takes for the cnn preset's second convolution (and only where it is
cheaper), slices large inference batches, refuses strides and dilation, round-trips its
config, and a planted slip in its inverse transform is caught."""

from __future__ import annotations

import numpy as np
import pytest

from chainrule import kernels, models
from chainrule.layers import Conv2D, fourier
from helpers import float_arrays

#: (constructor arguments, sample shape): odd and even padded sizes, padding, rectangular
#: kernels, one channel, a kernel as large as the padded image, rank-3 input.
SHAPES = [
    (dict(filters=4, kernel_size=5), (3, 12, 12)),
    (dict(filters=3, kernel_size=(3, 2), padding="same"), (2, 7, 9)),
    (dict(filters=2, kernel_size=3, padding=2), (3, 5, 6)),
    (dict(filters=2, kernel_size=(2, 4), padding=(1, 0)), (1, 8, 8)),
    (dict(filters=2, kernel_size=5), (2, 5, 5)),
    (dict(filters=3, kernel_size=3, use_bias=False), (7, 10)),
]


def both_paths(kwargs, shape, dtype, n=3, seed=0, need_input_grad=True):
    """{algorithm: (y, dL/dx, dL/dW, dL/db)} for the same weights, input and dL/dy."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *shape)).astype(dtype)
    results = {}
    for algorithm in ("im2col", "fourier"):
        layer = Conv2D(**kwargs, algorithm=algorithm)
        layer.build(shape, np.random.default_rng(1), dtype)
        if layer.b is not None:
            layer.b.value[...] = np.random.default_rng(2).standard_normal(layer.b.shape)
        y = layer.forward(x, training=True)
        g = np.random.default_rng(3).standard_normal(y.shape).astype(dtype)
        grad_x = layer.backward(g, need_input_grad=need_input_grad)
        results[algorithm] = (y, grad_x, layer.W.grad, None if layer.b is None else layer.b.grad)
    return results


@pytest.mark.parametrize("kwargs, shape", SHAPES)
def test_equals_im2col_in_float64(kwargs, shape):
    found = both_paths(kwargs, shape, np.float64)
    for name, ours, reference in zip(("y", "dL/dx", "dL/dW", "dL/db"), found["fourier"],
                                     found["im2col"], strict=True):
        if reference is None:
            continue
        assert ours.shape == reference.shape, name
        scale = np.abs(reference).max()
        np.testing.assert_allclose(ours, reference, rtol=1e-12, atol=1e-12 * scale, err_msg=name)


@pytest.mark.parametrize("kwargs, shape", SHAPES[:3])
def test_float32_stays_float32_and_agrees_to_its_rounding(kwargs, shape):
    found = both_paths(kwargs, shape, np.float32)
    for name, ours, reference in zip(("y", "dL/dx", "dL/dW"), found["fourier"],
                                     found["im2col"], strict=False):
        assert ours.dtype == np.float32, name
        scale = np.abs(reference).max()
        np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5 * scale, err_msg=name)
    layer = Conv2D(**kwargs, algorithm="fourier")
    layer.forward(np.zeros((2, *shape), np.float32), training=True)
    assert layer.cache[0] == "fourier"
    assert all(a.dtype == np.float32 for a in float_arrays(layer.cache))


def test_without_the_input_gradient_only_the_weights_get_one():
    found = both_paths(*SHAPES[0], np.float64, need_input_grad=False)
    assert found["fourier"][1] is None
    np.testing.assert_allclose(found["fourier"][2], found["im2col"][2], rtol=1e-12, atol=1e-12)


def test_same_result_with_numpy_copies_instead_of_the_compiled_transpose(monkeypatch):
    compiled = both_paths(*SHAPES[1], np.float64)["fourier"]
    monkeypatch.setattr(kernels, "ENABLED", False)
    plain = both_paths(*SHAPES[1], np.float64)["fourier"]
    for a, b in zip(compiled, plain, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "shape", [(5, 7), (16, 16), (33, 17), (32, 50), (50, 32), (3, 40), (40, 3)])
def test_compiled_transpose_is_the_transpose(shape):
    a = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    out = kernels.transpose(a)
    if kernels.available():
        assert out.flags.c_contiguous and out.dtype == np.float32
        np.testing.assert_array_equal(out, a.T)
    assert kernels.transpose(a.T) is None  # not C-contiguous: the caller copies with NumPy


def test_a_wrong_weight_for_the_nyquist_column_is_caught(monkeypatch):
    """The inverse counts the column b = P_w/2 of an even width once (it is its own mirror);
    counting it twice, like the other columns, gives a wrong y that the comparison with im2col
    catches (an odd width has no such column, so it would pass)."""
    real = fourier._columns_matrix.__wrapped__

    def doubled_nyquist(p, cols, scaled, dtype):
        m = np.array(real(p, cols, scaled, dtype))
        if scaled and p % 2 == 0:
            m[-2:] *= 2.0
        return m

    monkeypatch.setattr(fourier, "_columns_matrix", doubled_nyquist)
    even = both_paths(dict(filters=2, kernel_size=3), (2, 6, 8), np.float64)
    assert not np.allclose(even["fourier"][0], even["im2col"][0], rtol=1e-6, atol=1e-6)
    odd = both_paths(dict(filters=2, kernel_size=3), (2, 6, 7), np.float64)
    np.testing.assert_allclose(odd["fourier"][0], odd["im2col"][0], rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------- the choice
def test_auto_takes_the_fourier_path_for_the_cnn_presets_second_convolution():
    model = models.cnn(input_shape=(1, 28, 28), augment=0, seed=0)
    first, second = (layer for layer in model.layers if isinstance(layer, Conv2D))
    assert first.algorithm == second.algorithm == "auto"
    # One input channel, 24×24 outputs: the transforms would cost more than im2col.
    assert first.algorithm_for((128, 1, 28, 28), training=True) == "im2col"
    assert second.algorithm_for((128, 32, 12, 12), training=True) == "fourier"
    assert second.algorithm_for((1, 32, 12, 12), training=False) == "im2col"  # one digit
    x = np.random.default_rng(0).random((128, 1, 28, 28), dtype=np.float32)
    model.forward(x, training=True)
    # What a training forward keeps for backward: X and B, a fifth of im2col's X_col.
    cached = sum(a.nbytes for a in float_arrays(second.cache))
    assert second.cache[0] == "fourier" and cached < (128 * 8 * 8 * 25 * 32 * 4) / 4


def test_auto_keeps_im2col_for_strides_and_dilation():
    strided = Conv2D(64, 5, strides=2)
    dilated = Conv2D(64, 3, dilation=2)
    assert strided.algorithm_for((128, 32, 12, 12), True) == "im2col"
    assert dilated.algorithm_for((128, 32, 12, 12), True) == "im2col"


def test_a_conv_layer_says_what_each_algorithm_costs_and_which_it_runs():
    second = Conv2D(64, 5)
    counts = second.multiply_adds((128, 32, 12, 12))
    assert counts == {"im2col": 3 * 128 * 8 * 8 * 25 * 32 * 64,
                      "fourier": fourier.multiply_adds(128, 32, 64, (12, 12), (5, 5), True)}
    assert counts["fourier"] < 0.35 * counts["im2col"]
    assert second.algorithm_for((128, 32, 12, 12)) == "fourier"
    assert second.multiply_adds((1, 32, 12, 12), training=False)["im2col"] == 8 * 8 * 25 * 32 * 64
    first = Conv2D(32, 5)
    assert first.multiply_adds((128, 28, 28)) == first.multiply_adds((128, 1, 28, 28))
    assert first.algorithm_for((128, 28, 28)) == "im2col"
    assert Conv2D(64, 5, strides=2).multiply_adds((128, 32, 12, 12))["fourier"] is None
    assert Conv2D(64, 5, algorithm="fourier").algorithm_for((1, 32, 12, 12), False) == "fourier"


def test_large_inference_batches_go_through_in_slices(monkeypatch):
    from chainrule.layers import conv as conv_module

    layer = Conv2D(4, 5, algorithm="fourier")
    x = np.random.default_rng(0).standard_normal((9, 3, 12, 12))
    whole = layer.forward(x)
    calls = []
    real = fourier.forward
    monkeypatch.setattr(fourier, "forward",
                        lambda xp, W, training: calls.append(len(xp)) or real(xp, W, training))
    per_sample = layer._bytes_per_sample("fourier", 3, 12, 12, x.itemsize)
    monkeypatch.setattr(conv_module, "INFERENCE_COLUMN_BYTES", 4 * per_sample)
    sliced = layer.forward(x)
    assert calls == [4, 4, 1]
    np.testing.assert_allclose(sliced, whole, rtol=1e-12, atol=1e-12)


def test_multiply_adds_count_the_products_and_transforms():
    """For the cnn's second convolution, the Fourier path's count is about a third of im2col's
    3·N·H′·W′·kh·kw·C·F; the products alone are 3 × Φ × 4·F·C·N with Φ = 12·7."""
    n, c, f = 128, 32, 64
    im2col = 3 * n * 8 * 8 * 25 * c * f
    count = fourier.multiply_adds(n, c, f, (12, 12), (5, 5), training=True)
    products = 3 * 12 * 7 * 4 * f * c * n
    assert products < count < 0.35 * im2col
    assert fourier.multiply_adds(n, c, f, (12, 12), (5, 5), training=False) < count / 2


# ---------------------------------------------------------------------- arguments and config
@pytest.mark.parametrize("kwargs, message", [
    (dict(algorithm="fft"), "algorithm must be one of 'auto', 'im2col', 'fourier', got 'fft'"),
    (dict(algorithm="fourier", strides=2), "algorithm='fourier' needs strides 1 and dilation 1"),
    (dict(algorithm="fourier", dilation=(1, 2)), "got strides (1, 1) and dilation (1, 2)"),
])
def test_invalid_algorithm(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Conv2D(2, 3, **kwargs)


def test_config_names_a_chosen_algorithm_and_round_trips():
    layer = Conv2D(2, 3, algorithm="fourier")
    config = layer.get_config()
    assert config["algorithm"] == "fourier"
    assert Conv2D.from_config(config).algorithm == "fourier"
    assert "algorithm" not in Conv2D(2, 3).get_config()  # "auto", the default
