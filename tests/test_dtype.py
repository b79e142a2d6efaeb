"""dtype policy: a float32 model computes in float32 end to end, a float64 model in float64.

NumPy 2 upcasts silently (a float32 array times an ``np.float64`` scalar or an int64 array is
float64) and ``+=`` hides the result's dtype, so checking the arrays that come out of each layer
is not enough. ``Spy`` (in tests/helpers.py) is an ndarray view whose every ufunc call
(including ``@``, reductions and ``out=`` forms) is checked: a float64 operand or result while
training a float32 model is recorded, wherever it happens inside a layer or an optimizer.
"""

import tracemalloc

import numpy as np
import pytest

import chainrule as cr
from chainrule import losses, optimizers
from chainrule.layers import (
    Dense,
    Dropout,
    Embedding,
    Flatten,
    Sigmoid,
    Softmax,
)
from helpers import Spy, spying


@pytest.fixture
def spy_log():
    with spying() as log:
        yield log


def test_spy_catches_silent_upcasts(spy_log):
    """The checker is tested too: each classic NumPy 2 upcast is caught, even behind ``+=``."""
    a = np.ones(4, np.float32).view(Spy)
    b = a.copy()
    a * 2.0  # a Python float is weak: stays float32
    a * np.float32(2.0)
    b += a > 0  # a bool mask stays float32
    assert spy_log == []
    upcasts = [
        lambda: a * np.float64(2.0),
        lambda: b.__iadd__(np.arange(4) * 0.5),  # int64 array · float → float64, hidden by +=
        lambda: np.multiply(a, np.sqrt(np.float64(2)), out=b),  # computed in float64, cast back
        lambda: a / np.int64(4) * np.ones(4),  # division by an np.int64 count, then float64 ones
        lambda: a.astype(np.float64),
    ]
    for upcast in upcasts:
        spy_log.clear()
        upcast()
        assert spy_log, "an upcast went unnoticed"


# ---------------------------------------------------------------------------- models and step


HEADS = {
    # name: (head layers, loss, target maker from integer labels y and N)
    "logits": (lambda: [Dense(4)], lambda: losses.SparseCategoricalCrossEntropy(from_logits=True),
               lambda y: y),
    "softmax": (lambda: [Dense(4), Softmax()], losses.SparseCategoricalCrossEntropy,
                lambda y: y),
    "onehot": (lambda: [Dense(4)], lambda: losses.CategoricalCrossEntropy(from_logits=True),
               lambda y: np.eye(4, dtype=np.float32)[y]),
    "bce": (lambda: [Dense(1), Sigmoid()], losses.BinaryCrossEntropy,
            lambda y: (y % 2).astype(np.float32)[:, None]),
    "bce_logits": (lambda: [Dense(1)], lambda: losses.BinaryCrossEntropy(from_logits=True),
                   lambda y: (y % 2).astype(np.float32)[:, None]),
    "mse": (lambda: [Dense(2)], losses.MeanSquaredError,
            lambda y: np.stack([y, -y], axis=1).astype(np.float32)),
}

OPTIMIZERS = {
    "sgd_nesterov_wd": lambda: optimizers.SGD(0.01, momentum=0.9, nesterov=True, weight_decay=0.1),
    "sgd_dampening": lambda: optimizers.SGD(0.01, momentum=0.9, dampening=0.5),
    "adam_wd": lambda: optimizers.Adam(0.01, weight_decay=0.1),
    "adamw": lambda: optimizers.AdamW(0.01),
    "rmsprop_all": lambda: optimizers.RMSprop(0.01, momentum=0.9, centered=True, weight_decay=0.1),
    "rmsprop": lambda: optimizers.RMSprop(0.01),
}

N = 6


def body():
    return [
        Flatten(input_shape=(3, 4)),
        Dense(16, activation="relu"),
        Dropout(0.25),
        Dense(12, activation="tanh"),
        Dense(10, activation="sigmoid"),
        Dense(8, activation="leaky_relu"),
    ]


def make_case(head, dtype="float32", seed=0):
    head_layers, make_loss, make_target = HEADS[head]
    model = cr.Sequential(body() + head_layers(), dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, 3, 4)).astype(np.float32)
    y = make_target(rng.integers(0, 4, N))
    return model, make_loss(), x, y


def spied_step(model, loss, optimizer, x, y):
    """Forward, loss, backward and optimizer step, walking the layers by hand on Spy arrays.

    Returns every array the step produced, labelled: activations, caches, each layer's grad_x,
    each param.grad, each optimizer state array and each parameter value.
    """
    for p in model.parameters():
        p.value = p.value.view(Spy)
    arrays = []
    a = np.asarray(x, dtype=model.dtype).view(Spy)
    for layer in model.layers:
        a = layer.apply(a, training=True)
        arrays.append((f"{layer.name} output", a))
        if isinstance(layer.cache, np.ndarray) and layer.cache.dtype.kind == "f":
            arrays.append((f"{layer.name} cache", layer.cache))
    loss(np.asarray(a), y)
    grad = loss.backward()
    arrays.append(("dL/doutput", grad))
    grad = grad.view(Spy)
    for layer in reversed(model.layers):
        grad = layer._backward(grad, True)
        arrays.append((f"{layer.name} grad_x", grad))
        arrays += [(f"{layer.name}/{p.name}.grad", p.grad) for p in layer.parameters()]
    params = model.parameters()
    for p in params:
        p.grad = p.grad.view(Spy)
    optimizer.step(params)
    for i, p in enumerate(params):
        arrays.append((f"param {i} value", p.value))
        arrays += [(f"param {i} state {k}", v) for k, v in optimizer.state[p].items()
                   if k != "step"]
    return arrays


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
@pytest.mark.parametrize("head", list(HEADS))
def test_float32_training_step_stays_float32(head, opt, spy_log):
    model, loss, x, y = make_case(head)
    model.build(x.shape[1:])
    optimizer = OPTIMIZERS[opt]()
    for _ in range(2):  # the second step runs with existing optimizer state
        arrays = spied_step(model, loss, optimizer, x, y)
    assert spy_log == [], f"float64 inside the step: {sorted(set(spy_log))}"
    wrong = [(name, a.dtype) for name, a in arrays if a.dtype != np.float32]
    assert wrong == []
    n_params = len(model.parameters())
    assert len([name for name, _ in arrays if name.endswith(".grad")]) == n_params
    assert len([name for name, _ in arrays if " state " in name]) >= n_params


@pytest.mark.parametrize("head", list(HEADS))
def test_float64_model_stays_float64(head):
    model, loss, x, y = make_case(head, dtype="float64")
    model.build(x.shape[1:])
    arrays = spied_step(model, loss, optimizers.Adam(0.01, weight_decay=0.1), x, y)
    wrong = [(name, a.dtype) for name, a in arrays if a.dtype != np.float64]
    assert wrong == []


def test_embedding_step_stays_float32(spy_log):
    model = cr.Sequential([Embedding(10, 4, input_shape=(5,)), Flatten(), Dense(3)], seed=0)
    ids = np.random.default_rng(0).integers(0, 10, (N, 5))
    a = ids.view(Spy)
    arrays = []
    for layer in model.layers:
        a = layer.apply(a, training=True)
        arrays.append(a)
    loss = losses.SparseCategoricalCrossEntropy(from_logits=True)
    loss(np.asarray(a), np.arange(N) % 3)
    grad = loss.backward().view(Spy)
    for p in model.parameters():
        p.value = p.value.view(Spy)
    for layer in reversed(model.layers):
        grad = layer._backward(grad, True)
        if grad is not None:
            arrays.append(grad)
    optimizers.Adam(0.01).step(model.parameters())
    assert spy_log == []
    assert all(a.dtype == np.float32 for a in arrays)
    assert all(p.value.dtype == np.float32 and p.grad.dtype == np.float32
               for p in model.parameters())


# ---------------------------------------------------------------------------- through fit


def record_fit_arrays(model):
    """Wrap each layer's forward and backward (and the loss's backward) to keep their arrays."""
    seen = []
    for layer in model.layers:
        call, backward = layer.apply, layer.backward

        def wrapped_call(x, training, call=call, layer=layer):
            y = call(x, training)
            seen.append((f"{layer.name} input", x))
            seen.append((f"{layer.name} output", y))
            if isinstance(layer.cache, np.ndarray) and layer.cache.dtype.kind == "f":
                seen.append((f"{layer.name} cache", layer.cache))
            return y

        def wrapped_backward(grad_y, need_input_grad=True, backward=backward, layer=layer):
            grad_x = backward(grad_y, need_input_grad=need_input_grad)
            seen.append((f"{layer.name} grad_y", grad_y))
            if grad_x is not None:
                seen.append((f"{layer.name} grad_x", grad_x))
            seen.extend((f"{layer.name}/{p.name}.grad", p.grad) for p in layer.parameters())
            return grad_x

        layer.apply = wrapped_call
        layer.backward = wrapped_backward
    loss_backward = model.loss.backward

    def wrapped_loss_backward():
        grad = loss_backward()
        seen.append(("dL/doutput", grad))
        return grad

    model.loss.backward = wrapped_loss_backward
    return seen


def fit_and_record(dtype, x, y, head="softmax", opt="rmsprop_all"):
    model, loss, _, _ = make_case(head, dtype=dtype)
    model.compile(OPTIMIZERS[opt](), loss, metrics=["accuracy"])
    model.build(x.shape[1:])
    seen = record_fit_arrays(model)
    model.fit(x, y, epochs=2, batch_size=4, validation_data=(x, y), verbose=0)
    return model, seen


def assert_all(model, seen, dtype):
    wrong = [(name, a.dtype) for name, a in seen if a.dtype != dtype]
    assert wrong == []
    assert {name.split()[-1] for name, _ in seen} >= {"input", "output", "grad_y", "grad_x"}
    for p in model.parameters():
        assert p.value.dtype == dtype and p.grad.dtype == dtype
        for key, value in model.optimizer.state[p].items():
            if key != "step":
                assert value.dtype == dtype, key


def test_float64_input_to_float32_model_trains_in_float32():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (10, 3, 4), dtype=np.uint8)
    x = pixels / 255.0
    assert x.dtype == np.float64
    y = rng.integers(0, 4, 10)
    model, seen = fit_and_record("float32", x, y)
    assert_all(model, seen, np.float32)
    assert model.predict(x).dtype == np.float32


@pytest.mark.parametrize("x_dtype", [np.float32, np.float64])
def test_float64_model_fits_in_float64(x_dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 3, 4)).astype(x_dtype)
    y = rng.integers(0, 4, 10)
    model, seen = fit_and_record("float64", x, y)
    assert_all(model, seen, np.float64)
    assert model.predict(x).dtype == np.float64


def test_no_array_of_shape_n_c_c():
    """The softmax Jacobian is never formed: no (N, C, C) array, neither seen nor allocated."""
    n, c = 64, 128
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 8)).astype(np.float32)
    y = rng.integers(0, c, n)
    for head_layers, loss in [
        ([Dense(c), Softmax()], losses.SparseCategoricalCrossEntropy()),
        ([Dense(c), Softmax()], losses.CategoricalCrossEntropy()),
        ([Dense(c)], losses.SparseCategoricalCrossEntropy(from_logits=True)),
    ]:
        model = cr.Sequential([Dense(16, activation="relu", input_shape=(8,))] + head_layers,
                              seed=0)
        model.compile(optimizers.SGD(0.1), loss)
        target = y if isinstance(loss, losses.SparseCategoricalCrossEntropy) else np.eye(
            c, dtype=np.float32)[y]
        seen = record_fit_arrays(model)
        xb = model.prepare_input(x, "test")
        model.train_step(xb, target)  # warm-up: optimizer state, scratch buffers
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            model.train_step(xb, target)
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        assert not [name for name, a in seen if a.ndim == 3], "a 3-D array in a 2-D model"
        # An (N, C, C) float32 array alone is 4 MiB; the whole step needs a few hundred KiB.
        assert peak < n * c * c * 4 / 4, f"{type(loss).__name__}: step peaked at {peak} bytes"
