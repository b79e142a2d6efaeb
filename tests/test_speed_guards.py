"""Guards for the speed work: cheap properties of a training step that keep it fast."""

import gc
import sys

import numpy as np
import pytest

import chainrule as cr
from chainrule import layers, losses, models, optimizers
from chainrule.layers.base import check_finite
from chainrule.optimizers import FLUSH_EVERY, _flush_subnormals
from helpers import Spy, backward_unchecked, float_arrays, spy_on, spying


def small_mlp():
    model = cr.Sequential([
        layers.Dense(32, activation="relu", input_shape=(20,)),
        layers.Dense(32, activation="relu"),
        layers.Dense(5),
    ], seed=0)
    model.compile(optimizers.Adam(1e-3), losses.SparseCategoricalCrossEntropy(from_logits=True))
    return model


def test_first_layer_computes_no_input_gradient_during_fit(monkeypatch):
    model = small_mlp()
    first = model.layers[0]
    calls = []
    original = type(first)._backward

    def spy(self, grad_y, need_input_grad):
        result = original(self, grad_y, need_input_grad)
        calls.append((self.name, need_input_grad, result))
        return result

    monkeypatch.setattr(type(first), "_backward", spy)
    rng = np.random.default_rng(0)
    model.fit(rng.standard_normal((64, 20)), rng.integers(0, 5, 64), epochs=1, batch_size=16,
              verbose=0)
    firsts = [c for c in calls if c[0] == first.name]
    others = [c for c in calls if c[0] != first.name]
    assert len(firsts) == 4
    assert all(need is False and result is None for _, need, result in firsts)
    assert all(need is True and result is not None for _, need, result in others)


@pytest.mark.parametrize("preset", ["mlp", "cnn"])
def test_fit_back_propagates_no_further_than_the_first_layer_with_parameters(preset,
                                                                             monkeypatch):
    """The presets' RandomShift (and the mlp's Flatten) have no gradient to assign: the first
    Dense or Conv2D computes no dL/dx for them, and their backward never runs."""
    model = models.build(preset, seed=0, input_shape=(28, 28))
    first = next(i for i, layer in enumerate(model.layers) if layer.parameters())
    assert first == {"mlp": 2, "cnn": 1}[preset]
    calls = []
    for cls in {type(layer) for layer in model.layers}:
        original = cls._backward

        def spy(self, grad_y, need_input_grad, original=original):
            calls.append((self.name, need_input_grad))
            return original(self, grad_y, need_input_grad)

        monkeypatch.setattr(cls, "_backward", spy)
    rng = np.random.default_rng(0)
    model.fit(rng.random((8, 28, 28), dtype=np.float32), np.arange(8) % 10, epochs=1,
              batch_size=8, verbose=0)
    names = [layer.name for layer in model.layers]
    assert [name for name, _ in calls] == names[:first - 1:-1]
    assert dict(calls)[names[first]] is False
    assert all(need for name, need in calls if name != names[first])


def counting_numpy(function: str, calls: list):
    """A stand-in for the numpy module in which each call of ``function`` appends the shape of
    its first argument to ``calls``; everything else is numpy's own."""
    real = getattr(np, function)

    class Counting:
        def __getattr__(self, name):
            return getattr(np, name)

    def counted(*args, **kwargs):
        calls.append(np.shape(args[0]))
        return real(*args, **kwargs)

    setattr(Counting, function, staticmethod(counted))
    return Counting()


def test_dense_skips_the_input_gradient_product(monkeypatch):
    """With need_input_grad=False, Dense does one matmul (dL/dW), not two."""
    dense = layers.Dense(4)
    x = np.ones((3, 5), np.float32)
    dense.forward(x, training=True)
    products = []
    import chainrule.layers.dense as dense_module

    monkeypatch.setattr(dense_module, "np", counting_numpy("matmul", products))
    assert dense.backward(np.ones((3, 4), np.float32), need_input_grad=False) is None
    assert products == [(5, 3)]  # only xᵀ g


def test_gradient_buffers_are_reused_between_steps():
    model = small_mlp()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 20)).astype(np.float32)
    y = rng.integers(0, 5, 16)
    model.train_step(x, y)
    first = [p.grad for p in model.parameters()]
    model.train_step(x, y)
    assert all(p.grad is g for p, g in zip(model.parameters(), first, strict=True))


def test_subnormal_state_is_flushed_every_few_steps():
    tiny = np.finfo(np.float32).tiny
    state = {"m": np.array([tiny / 4, -tiny / 8, tiny, 1e-3, 0.0], np.float32)}
    _flush_subnormals(state)
    np.testing.assert_array_equal(state["m"], np.array([0, 0, tiny, 1e-3, 0], np.float32))

    p = cr.Parameter(np.ones(4, np.float32), "w")
    p.grad = np.zeros(4, np.float32)
    opt = optimizers.Adam(1e-3)
    opt.step([p])
    opt.state[p]["m"][:] = tiny / 16
    for _ in range(FLUSH_EVERY - 1):
        opt.step([p])
    assert np.all(opt.state[p]["m"] == 0)


@pytest.mark.parametrize("values, bad", [
    ([3e38, 3e38, 3e38], False),     # the sum overflows, every value is finite
    ([1.0, np.inf, -np.inf], True),  # the sum is NaN
    ([1.0, np.nan], True),
    ([0.5, 0.25], False),
])
def test_finiteness_check_is_exact(values, bad):
    x = np.array(values, np.float32)
    if bad:
        with pytest.raises(ValueError, match="non-finite"):
            check_finite(x, "test")
    else:
        check_finite(x, "test")


# ---------------------------------------------------------------------- the cnn's image layers
def small_cnn():
    """The cnn preset's layer stack (augmentation off), built for 1×28×28 images."""
    return models.cnn(input_shape=(1, 28, 28), augment=0, seed=0)


def cnn_batch(n=8):
    rng = np.random.default_rng(0)
    return rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)


def test_cnn_training_step_is_float32_throughout():
    """No NumPy operation in a cnn training step (every layer forward and backward, the loss)
    sees or makes a float64, and every activation, cache and gradient is float32."""
    model = small_cnn()
    x, y = cnn_batch()
    for layer in model.layers:
        spy_on(layer)
    with spying() as log:
        h = x.view(Spy)
        outputs, caches = [], []
        for layer in model.layers:
            h = layer.apply(h, True)
            outputs.append(h)
            caches += float_arrays(layer.cache)
        model.loss(np.asarray(h), y)
        grad = model.loss.backward()
        grads = []
        for layer in reversed(model.layers):
            grad = backward_unchecked(layer, grad, need_input_grad=True)
            grads.append(grad)
        found = list(log)
    assert found == [], sorted(set(found))
    assert {a.dtype for a in outputs + caches + grads} == {np.dtype(np.float32)}
    assert {p.grad.dtype for p in model.parameters()} == {np.dtype(np.float32)}


def test_image_layers_hand_on_channels_last_views_inside_a_model():
    """Inside a Sequential, Conv2D's output and the BatchNorm, MaxPool2D and ReLU outputs after
    it are (N, C, H, W) views of channels-last memory, and their input gradients come back in
    that layout, so no layer reorders the data; the model returns C-contiguous arrays."""
    model = small_cnn()
    x, y = cnn_batch()
    h, outputs = model.prepare_input(x, "test"), []
    for layer in model.layers:
        h = layer.apply(h, True)
        outputs.append((layer, h))
    image_outputs = [(layer, out) for layer, out in outputs if out.ndim == 4]
    assert [type(layer).__name__ for layer, _ in image_outputs] == \
        ["Conv2D", "BatchNorm", "MaxPool2D", "ReLU"] * 2
    for layer, out in image_outputs:
        assert out.transpose(0, 2, 3, 1).flags.c_contiguous, layer.name
        assert not out.flags.c_contiguous, layer.name
    model.loss(h, y)
    grad = model.loss.backward()
    for i in range(len(model.layers) - 1, 0, -1):
        grad = model.layers[i].backward(grad)
        # dL/dx of batchnorm_1 … maxpool2d_2, whose inputs were channels-last (the gradient
        # from Flatten is C-contiguous; maxpool2d_2 puts it back into its input's layout).
        if 1 <= i <= 6:
            assert grad.transpose(0, 2, 3, 1).flags.c_contiguous, model.layers[i].name
    assert model.forward(x).flags.c_contiguous
    first = model.layers[0]
    model.forward(x, training=True)
    model.loss(model.forward(x, training=True), y)
    assert model.backward(model.loss.backward()).flags.c_contiguous
    assert first.contiguous_output is False
    assert layers.Conv2D(4, 3).contiguous_output is True


def count_calls(factory, shape) -> int:
    """Python and C function calls made by one training forward and backward of the layer
    ``factory()`` on a batch of ``shape`` (after a first, building, pass)."""
    layer = factory()
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    layer.backward(np.ones_like(layer.forward(x, training=True)))
    count = 0

    def profile(frame, event, arg):
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    # Without the garbage collector, whose finalizers (of whatever another test left behind)
    # would count as calls of the step they happen to interrupt.
    gc.collect()
    gc.disable()
    sys.setprofile(profile)
    try:
        grad_y = np.ones_like(layer.forward(x, training=True))
        layer.backward(grad_y)
    finally:
        sys.setprofile(None)
        gc.enable()
    return count


@pytest.mark.parametrize("factory", [
    lambda: layers.Conv2D(4, 5, use_bias=False),
    lambda: layers.Conv2D(4, 3, padding="same", strides=2),
    lambda: layers.BatchNorm(),
    lambda: layers.MaxPool2D(2),
    lambda: layers.MaxPool2D(3, 2, "same"),
    lambda: layers.ReLU(),
], ids=["conv5", "conv3-same-s2", "batchnorm", "maxpool2", "maxpool3-s2-same", "relu"])
def test_image_layers_make_as_many_calls_for_any_batch_and_image_size(factory):
    """No Python loop over samples, pixels or channels: a training forward and backward makes
    the same number of function calls for 2 images of 3×12×12 as for 16 of 3×20×20."""
    assert count_calls(factory, (2, 3, 12, 12)) == count_calls(factory, (16, 3, 20, 20))


def test_a_fit_batch_whose_labels_are_all_ignored_still_fails_clearly():
    """The whole targets pass the check (some labels are kept) but one batch keeps none."""
    model = cr.Sequential([layers.Dense(3, input_shape=(4,))], seed=0)
    model.compile(optimizers.Adam(1e-3), losses.SparseCategoricalCrossEntropy(
        from_logits=True, ignore_index=-100))
    y = np.full(8, -100)
    y[:4] = [0, 1, 2, 0]
    with pytest.raises(ValueError, match="every label equals ignore_index=-100"):
        model.fit(np.ones((8, 4), np.float32), y, batch_size=4, shuffle=False, verbose=0)


def test_fused_cross_entropy_takes_one_exponential_for_value_and_gradient(monkeypatch):
    import chainrule.functional as functional_module

    calls = []
    monkeypatch.setattr(functional_module, "np", counting_numpy("exp", calls))
    loss = losses.SparseCategoricalCrossEntropy(from_logits=True)
    z = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    loss(z, np.array([0, 1, 2, 3, 0, 1]))
    grad = loss.backward()
    assert calls == [(6, 4)]
    assert grad.dtype == np.float32
