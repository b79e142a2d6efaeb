"""The compiled Adam loop (chainrule.kernels, numba) against the NumPy passes it replaces: the
same values bit for bit, used by a model's packed step, and the NumPy path when it is off."""

import numpy as np
import pytest

import chainrule as cr
from chainrule import kernels, layers, losses, optimizers


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
