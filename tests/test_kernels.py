"""The compiled Adam loop (chainrule.kernels, numba) against the NumPy passes it replaces: the
same values bit for bit, used by a model's packed step, and the NumPy path when it is off."""

import numpy as np
import pytest

import chainrule as cr
from chainrule import kernels, layers, losses, models, optimizers


def run_steps(make, dtype, compiled, monkeypatch, steps=25, shape=(37, 11)):
    """Values and state after ``steps`` Adam steps on one parameter, with the compiled loop on
    or off."""
    monkeypatch.setattr(kernels, "ENABLED", compiled)
    rng = np.random.default_rng(0)
    p = cr.Parameter(rng.standard_normal(shape).astype(dtype), "W")
    opt = make()
    for i in range(steps):
        # Mixed scales, exact zeros and a column that stays zero (moments decaying to 0).
        g = (rng.standard_normal(shape) * 10.0 ** rng.integers(-6, 2, shape)).astype(dtype)
        g[:, 0] = 0
        if i % 7 == 3:
            g[::3] = 0
        p.grad = g
        opt.step([p])
    state = opt.state[p]
    return p.value.copy(), state["m"].copy(), state["v"].copy()


ADAMS = {
    "adam": lambda: optimizers.Adam(1e-2),
    "adam_betas_eps": lambda: optimizers.Adam(3e-3, beta1=0.8, beta2=0.99, eps=1e-6),
    "adam_l2": lambda: optimizers.Adam(1e-2, weight_decay=0.05),
    "adamw": lambda: optimizers.AdamW(1e-2, weight_decay=0.1),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(ADAMS))
def test_compiled_adam_equals_the_numpy_passes_bit_for_bit(case, dtype, monkeypatch):
    ours = run_steps(ADAMS[case], dtype, True, monkeypatch)
    reference = run_steps(ADAMS[case], dtype, False, monkeypatch)
    for name, a, b in zip(("value", "m", "v"), ours, reference, strict=True):
        assert a.dtype == dtype, name
        np.testing.assert_array_equal(a, b, err_msg=f"{case} {np.dtype(dtype)}: {name}")


def test_a_model_step_runs_the_compiled_loop_once_on_the_packed_buffer(monkeypatch):
    """The MLP's Adam step is one kernel call on the whole (P,) buffer, not one per array."""
    model = cr.Sequential([layers.Dense(16, activation="relu", input_shape=(12,)),
                           layers.Dense(4)], seed=0)
    model.compile(optimizers.Adam(1e-2), losses.SparseCategoricalCrossEntropy(from_logits=True))
    calls = []
    real = kernels.adam

    def spy(value, *args):
        ran = real(value, *args)
        calls.append((value.shape, ran))
        return ran

    monkeypatch.setattr(kernels, "adam", spy)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((32, 12)).astype(np.float32), rng.integers(0, 4, 32)
    model.train_step(x, y)
    model.train_step(x, y)
    assert calls == [((model.count_params(),), True)] * 2


def test_with_the_kernels_off_or_for_arrays_it_does_not_take_adam_runs_numpy(monkeypatch):
    value = np.ones(8, np.float32)
    args = (np.ones(8, np.float32), np.zeros(8, np.float32), np.zeros(8, np.float32), 0.0, 0.9,
            0.999, 1e-8, 1e-3)
    monkeypatch.setattr(kernels, "ENABLED", False)
    assert kernels.adam(value, *args) is False
    monkeypatch.setattr(kernels, "ENABLED", True)
    strided = np.ones(16, np.float32)[::2]
    assert kernels.adam(strided, *args) is False
    assert kernels.adam(value.astype(np.float16), *args) is False
    assert np.all(value == 1) and np.all(strided == 1)


def test_available_says_whether_the_compiled_loop_runs(monkeypatch):
    assert kernels.available()  # numba is in the test extra
    monkeypatch.setattr(kernels, "ENABLED", False)
    assert not kernels.available()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_flush_of_subnormals_equals_the_numpy_assignment(dtype, monkeypatch):
    """Subnormals of either sign become +0; tiny itself, NaN, ±inf and -0.0's sign as NumPy
    leaves them; 2-D state arrays too; a strided array is left to NumPy."""
    from chainrule.optimizers import _flush_subnormals

    tiny = np.finfo(dtype).tiny
    values = np.array([tiny / 4, -tiny / 8, tiny, -tiny, 1e-3, 0.0, -0.0, np.nan, np.inf,
                       -np.inf, tiny * (1 - np.finfo(dtype).eps)], dtype).reshape(1, 11)
    flushed = {}
    for compiled in (True, False):
        monkeypatch.setattr(kernels, "ENABLED", compiled)
        state = {"m": values.copy(), "step": 3}
        assert kernels.flush_subnormals(state["m"].copy()) == compiled
        _flush_subnormals(state)
        flushed[compiled] = state["m"]
        assert state["step"] == 3
    np.testing.assert_array_equal(flushed[True], flushed[False])
    assert np.signbit(flushed[True]).tolist() == np.signbit(flushed[False]).tolist()
    assert flushed[True][0, :4].tolist() == [0, 0, tiny, -tiny]
    monkeypatch.setattr(kernels, "ENABLED", True)
    assert not kernels.flush_subnormals(values[:, ::2])


# ---------------------------------------------------------------------- BatchNorm and max pooling
def channels_last(x):
    """x (N, C, H, W) with the same values in channels-last memory, as a Conv2D hands it on."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def batchnorm_step(x, g, compiled, monkeypatch):
    """y, dL/dx, dL/dγ, dL/dβ and the running statistics of one BatchNorm training step, with
    the compiled passes on or off, and whether they ran."""
    monkeypatch.setattr(kernels, "ENABLED", compiled)
    rng = np.random.default_rng(3)
    layer = layers.BatchNorm(momentum=0.3)
    layer.build(x.shape[1:], dtype=x.dtype)
    layer.gamma.value[...] = rng.uniform(-2, 2, layer.gamma.value.shape)
    layer.beta.value[...] = rng.uniform(-1, 1, layer.beta.value.shape)
    layer.contiguous_output = False
    y = layer.forward(x, training=True)
    ran = isinstance(layer.cache[0], tuple)
    grad_x = layer.backward(g)
    return (y, grad_x, layer.gamma.grad, layer.beta.grad, layer.running_mean,
            layer.running_var), ran


BATCHNORM_INPUTS = {
    "NxC": lambda rng: rng.standard_normal((9, 5)) * 3 + 7,
    "images-channels-last": lambda rng: channels_last(rng.standard_normal((4, 6, 5, 7)) * 2 - 5),
    "images-NCHW": lambda rng: rng.standard_normal((3, 2, 4, 4)) + 100,
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(BATCHNORM_INPUTS))
def test_compiled_batchnorm_equals_the_numpy_passes_to_rounding(case, dtype, monkeypatch):
    rng = np.random.default_rng(0)
    x = BATCHNORM_INPUTS[case](rng).astype(dtype)
    if x.ndim == 4 and case.endswith("channels-last"):
        x = channels_last(x)
    g = rng.standard_normal(x.shape).astype(dtype)
    ours, ran = batchnorm_step(x, g, True, monkeypatch)
    reference, reference_ran = batchnorm_step(x, g, False, monkeypatch)
    assert ran and not reference_ran
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    names = ("y", "dL/dx", "dL/dγ", "dL/dβ", "running_mean", "running_var")
    for name, a, b in zip(names, ours, reference, strict=True):
        assert a.dtype == dtype and a.shape == b.shape, name
        scale = float(np.abs(b).max())
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale, err_msg=name)


def test_a_planted_slip_in_the_compiled_batchnorm_backward_is_caught(monkeypatch):
    """The comparison above can fail: a compiled backward that drops the x̂ Σ(g x̂) term (the
    path through σ) is far from the NumPy passes."""
    rng = np.random.default_rng(1)
    x = channels_last(rng.standard_normal((4, 3, 5, 5)))
    g = rng.standard_normal(x.shape)
    reference, _ = batchnorm_step(x, g, False, monkeypatch)
    real = kernels.batchnorm_input_grad
    monkeypatch.setattr(kernels, "batchnorm_input_grad",
                        lambda g, x, mean, a, b, c: real(g, x, mean, a, b, 0 * c))
    slipped, ran = batchnorm_step(x, g, True, monkeypatch)
    assert ran
    assert not np.allclose(slipped[1], reference[1], rtol=1e-3)


POOLS = [((2, 2), (4, 6, 8, 10)), ((2, 2), (3, 4, 7, 9)), ((3, 3), (2, 5, 9, 7)),
         ((2, 3), (3, 2, 6, 6)), ((1, 2), (2, 3, 4, 4))]


def pool_step(x, pool_size, compiled, monkeypatch):
    monkeypatch.setattr(kernels, "ENABLED", compiled)
    layer = layers.MaxPool2D(pool_size)
    layer.contiguous_output = False
    y = layer.forward(x, training=True)
    ran = layer.cache[0] == "code"
    g = np.random.default_rng(5).standard_normal(y.shape).astype(x.dtype)
    return y, layer.backward(g), ran


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("pool_size", "shape"), POOLS)
def test_compiled_max_pool_equals_the_numpy_passes_bit_for_bit(pool_size, shape, dtype,
                                                               monkeypatch):
    """Values in {0, 1, 2}: most windows hold ties, which go to the first maximum in both."""
    x = channels_last(np.random.default_rng(0).integers(0, 3, shape).astype(dtype))
    y, grad_x, ran = pool_step(x, pool_size, True, monkeypatch)
    y_ref, grad_ref, ran_ref = pool_step(x, pool_size, False, monkeypatch)
    assert ran and not ran_ref
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(grad_x, grad_ref)
    assert y.transpose(0, 2, 3, 1).flags.c_contiguous
    assert grad_x.transpose(0, 2, 3, 1).flags.c_contiguous


def test_compiled_max_pool_propagates_nan_and_skips_other_layouts(monkeypatch):
    """A NaN that reaches a pooling inside a model (``apply``: a layer on its own refuses
    non-finite input) comes out as NaN on both paths."""
    x = channels_last(np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4))
    x[1, 2, 3, 2] = np.nan
    pooled = {}
    for compiled in (True, False):
        monkeypatch.setattr(kernels, "ENABLED", compiled)
        layer = layers.MaxPool2D(2)
        pooled[compiled] = layer.apply(x, True)
        assert (layer.cache[0] == "code") == compiled
    np.testing.assert_array_equal(pooled[True], pooled[False])
    assert np.isnan(pooled[True][1, 2, 1, 1]) and np.isnan(pooled[True]).sum() == 1
    _, _, ran_nchw = pool_step(np.ascontiguousarray(x[:1]), 2, True, monkeypatch)
    assert not ran_nchw  # NCHW memory: the NumPy passes, which read it in its own order


def test_kernels_turned_off_between_forward_and_backward_fall_back_to_numpy(monkeypatch):
    rng = np.random.default_rng(2)
    x = channels_last(rng.standard_normal((3, 4, 6, 6)))
    for make in (layers.BatchNorm, lambda: layers.MaxPool2D(2)):
        monkeypatch.setattr(kernels, "ENABLED", False)
        layer = make()
        layer.forward(x, training=True)
        g = rng.standard_normal(layer.forward(x, training=True).shape)
        reference = layer.backward(g)
        monkeypatch.setattr(kernels, "ENABLED", True)
        layer.forward(x, training=True)
        monkeypatch.setattr(kernels, "ENABLED", False)
        np.testing.assert_allclose(layer.backward(g), reference, rtol=1e-12, atol=1e-12)


def test_the_cnn_preset_trains_through_the_compiled_batchnorm_and_pooling(monkeypatch):
    """Every BatchNorm and MaxPool2D of the cnn preset takes the compiled passes in training,
    and its loss after a few steps is the NumPy passes' to rounding."""
    rng = np.random.default_rng(0)
    x, y = rng.random((16, 28, 28), dtype=np.float32), rng.integers(0, 10, 16)
    losses_by_path = {}
    for compiled in (True, False):
        monkeypatch.setattr(kernels, "ENABLED", compiled)
        model = models.cnn(seed=0, augment=0, dropout=0.0)
        history = [model.train_step(x, y)[0] for _ in range(3)]
        model.forward(x, training=True)
        paths = [isinstance(layer.cache[0], tuple) for layer in model.layers
                 if isinstance(layer, layers.BatchNorm)]
        paths += [layer.cache[0] == "code" for layer in model.layers
                  if isinstance(layer, layers.MaxPool2D)]
        assert paths == [compiled] * 5
        losses_by_path[compiled] = history
    np.testing.assert_allclose(losses_by_path[True], losses_by_path[False], rtol=1e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_batchnorm_inference_equals_the_numpy_passes_bit_for_bit(dtype, monkeypatch):
    rng = np.random.default_rng(4)
    x = channels_last(rng.standard_normal((5, 3, 4, 6)).astype(dtype) * 3 + 1)
    gamma = rng.uniform(-2, 2, 3)
    real, ran, outputs = kernels.channel_affine, [], {}

    def spy(*args):
        y = real(*args)
        ran.append(y is not None)
        return y

    monkeypatch.setattr(kernels, "channel_affine", spy)
    for compiled in (True, False):
        monkeypatch.setattr(kernels, "ENABLED", compiled)
        layer = layers.BatchNorm()
        layer.build(x.shape[1:], dtype=dtype)
        layer.gamma.value[...] = gamma
        layer.running_mean[...] = [0.5, -1.0, 2.0]
        layer.running_var[...] = [0.25, 4.0, 1.5]
        outputs[compiled] = layer.forward(x)
    assert ran == [True, False]
    np.testing.assert_array_equal(outputs[True], outputs[False])


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "numpy"])
@pytest.mark.parametrize("case", list(BATCHNORM_INPUTS))
def test_batchnorm_x_hat_is_the_normalised_input_on_either_path(case, compiled, monkeypatch):
    """``x_hat`` (what explain_backward shows) is (x − μ)/√(σ² + ε) from either cache."""
    monkeypatch.setattr(kernels, "ENABLED", compiled)
    x = BATCHNORM_INPUTS[case](np.random.default_rng(6))
    layer = layers.BatchNorm()
    layer.forward(x, training=True)
    assert isinstance(layer.cache[0], tuple) == compiled
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    expected = (x - mean) / np.sqrt(var + layer.eps)
    np.testing.assert_allclose(layer.x_hat(), expected, rtol=1e-9, atol=1e-9)
    assert layer.x_hat().shape == x.shape
