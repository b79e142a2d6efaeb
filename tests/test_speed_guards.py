"""Guards for the speed work: cheap properties of a training step that keep it fast."""

import numpy as np
import pytest

import chainrule as cr
from chainrule import layers, losses, optimizers
from chainrule.layers.base import check_finite
from chainrule.optimizers import FLUSH_EVERY, _flush_subnormals


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


def test_dense_skips_the_input_gradient_product(monkeypatch):
    """With need_input_grad=False, Dense does one matmul (dL/dW), not two."""
    dense = layers.Dense(4)
    x = np.ones((3, 5), np.float32)
    dense.forward(x, training=True)
    products = []
    real_matmul = np.matmul

    class Counting:
        def __getattr__(self, name):
            return getattr(np, name)

        @staticmethod
        def matmul(*args, **kwargs):
            products.append(args[0].shape)
            return real_matmul(*args, **kwargs)

    import chainrule.layers.dense as dense_module

    monkeypatch.setattr(dense_module, "np", Counting())
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
