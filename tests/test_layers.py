"""Every layer against finite differences and against PyTorch autograd, driven by one table.

Each row of LAYER_CASES is (id, factory, input generator, torch reference): adding a layer is
adding a row. Every row goes through gradcheck in float64, equality with torch (forward, grad_x
and every parameter grad) in float32 and float64, dtype preservation, "nothing cached at
inference" and "backward never changes a parameter".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import chainrule as cr
from chainrule import layers
from chainrule.layers import Layer
from helpers import DTYPES, assert_close, rtol_for, to_torch

SEEDS = (0, 1, 2)


def batch_size(rng: np.random.Generator, seed: int) -> int:
    """Batch 1 for seed 0 (the degenerate case), a random small batch otherwise."""
    return 1 if seed == 0 else int(rng.integers(2, 6))


# ---------------------------------------------------------------------- input generators
# Each takes (rng, N, dtype) and draws the remaining axes at random from rng.

def features(rng, n, dtype):
    return rng.standard_normal((n, int(rng.integers(1, 7)))).astype(dtype)


def sequence(rng, n, dtype):
    return rng.standard_normal((n, int(rng.integers(1, 4)), int(rng.integers(1, 5)))).astype(dtype)


def extreme(rng, n, dtype):
    """Normal values with ±1e4, ±1e3 and ±50 planted: the saturated ends of sigmoid/softmax."""
    x = rng.standard_normal((n, 8))
    x[:, :6] = [1e4, -1e4, 1e3, -1e3, 50.0, -50.0]
    return rng.permuted(x, axis=1).astype(dtype)


def large_logits(rng, n, dtype):
    """Logits spread over ±1e3 with ±1e4 planted; the differences overflow a naive exp."""
    x = 1e3 * rng.standard_normal((n, 5))
    x[:, 0] = 1e4
    x[:, 1] = -1e4
    return rng.permuted(x, axis=1).astype(dtype)


def images(rng, n, dtype):
    return rng.standard_normal((n, 3, 4, 5)).astype(dtype)


VOCAB = 5


def token_ids(rng, n, dtype):
    """Ids (N, 7) from a vocabulary of 5: every sample repeats an id (7 > 5)."""
    return rng.integers(0, VOCAB, size=(n, 7), dtype=np.int64)


# ---------------------------------------------------------------------- torch references
# Each takes (our layer after its training forward, x as a tensor, the parameters as tensors in
# layer.parameters() order) and returns torch's output.

def torch_dense(layer, x, params):
    return TF.linear(x, params[0].T, params[1] if len(params) > 1 else None)


def torch_dropout(layer, x, params):
    # Dropout is random: apply *our* mask, so the comparison checks y = x ⊙ m and dL/dx = g ⊙ m.
    return x * to_torch(layer.cache)


def torch_embedding(layer, x, params):
    return TF.embedding(x, params[0])


@dataclass(frozen=True)
class LayerCase:
    id: str
    factory: Callable[[], Layer]
    make_input: Callable[[np.random.Generator, int, type], np.ndarray]
    torch_ref: Callable[[Layer, torch.Tensor, list[torch.Tensor]], torch.Tensor]


LAYER_CASES = [
    LayerCase("dense", lambda: layers.Dense(3), features, torch_dense),
    LayerCase("dense_no_bias", lambda: layers.Dense(4, use_bias=False), features, torch_dense),
    LayerCase("dense_he_normal",
              lambda: layers.Dense(3, kernel_initializer="he_normal", bias_initializer="normal"),
              features, torch_dense),
    LayerCase("dense_he_uniform", lambda: layers.Dense(2, kernel_initializer="he_uniform"),
              features, torch_dense),
    LayerCase("dense_glorot_normal",
              lambda: layers.Dense(5, kernel_initializer="glorot_normal",
                                   bias_initializer="normal"),
              features, torch_dense),
    LayerCase("dense_normal", lambda: layers.Dense(1, kernel_initializer="normal"), features,
              torch_dense),
    LayerCase("dense_rank3", lambda: layers.Dense(3, bias_initializer="normal"), sequence,
              torch_dense),
    LayerCase("dense_rank3_no_bias", lambda: layers.Dense(2, use_bias=False), sequence,
              torch_dense),
    LayerCase("identity", layers.Identity, features, lambda layer, x, p: x.clone()),
    LayerCase("relu", layers.ReLU, features, lambda layer, x, p: torch.relu(x)),
    LayerCase("relu_rank3", layers.ReLU, sequence, lambda layer, x, p: torch.relu(x)),
    LayerCase("leaky_relu", lambda: layers.LeakyReLU(alpha=0.2), features,
              lambda layer, x, p: TF.leaky_relu(x, 0.2)),
    LayerCase("sigmoid", layers.Sigmoid, features, lambda layer, x, p: torch.sigmoid(x)),
    LayerCase("sigmoid_extreme", layers.Sigmoid, extreme, lambda layer, x, p: torch.sigmoid(x)),
    LayerCase("tanh", layers.Tanh, features, lambda layer, x, p: torch.tanh(x)),
    LayerCase("tanh_extreme", layers.Tanh, extreme, lambda layer, x, p: torch.tanh(x)),
    LayerCase("softmax", layers.Softmax, features, lambda layer, x, p: torch.softmax(x, -1)),
    LayerCase("softmax_rank3", layers.Softmax, sequence,
              lambda layer, x, p: torch.softmax(x, -1)),
    LayerCase("softmax_large_logits", layers.Softmax, large_logits,
              lambda layer, x, p: torch.softmax(x, -1)),
    LayerCase("flatten", layers.Flatten, images, lambda layer, x, p: x.flatten(1)),
    LayerCase("dropout", lambda: layers.Dropout(0.3, seed=7), features, torch_dropout),
    LayerCase("dropout_images", lambda: layers.Dropout(0.5, seed=3), images, torch_dropout),
    LayerCase("embedding", lambda: layers.Embedding(VOCAB, 3), token_ids, torch_embedding),
    LayerCase("embedding_glorot",
              lambda: layers.Embedding(VOCAB, 2, embeddings_initializer="glorot_uniform"),
              token_ids, torch_embedding),
]
CASE_IDS = [case.id for case in LAYER_CASES]


def make(case: LayerCase, dtype, seed: int) -> tuple[Layer, np.ndarray]:
    """A layer built in ``dtype`` from ``seed`` and an input batch for it."""
    rng = np.random.default_rng(seed)
    x = case.make_input(rng, batch_size(rng, seed), dtype)
    layer = case.factory()
    layer.build(x.shape[1:], rng=rng, dtype=dtype)
    return layer, x


def float_input(x: np.ndarray) -> bool:
    return np.issubdtype(x.dtype, np.floating)


# ---------------------------------------------------------------------- the table, five ways
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", LAYER_CASES, ids=CASE_IDS)
def test_gradcheck_float64(case, seed):
    layer, x = make(case, np.float64, seed)
    report = cr.gradcheck(layer, x, seed=seed)
    expected = (["input"] if float_input(x) else []) + [p.name for p in layer.parameters()]
    assert [e.name for e in report.entries] == expected
    # The inputs are seeded away from every kink, so every entry is compared.
    assert all(e.checked > 0 and e.kinks == 0 for e in report.entries), str(report)
    assert report.ok, str(report)
    assert report.max_rel_error < 1e-6, str(report)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", LAYER_CASES, ids=CASE_IDS)
def test_matches_torch(case, dtype, seed):
    layer, x = make(case, dtype, seed)
    rtol = rtol_for(dtype)
    y = layer.forward(x, training=True)
    g = np.random.default_rng(100 + seed).standard_normal(y.shape).astype(dtype)
    grad_x = layer.backward(g)

    x_t = to_torch(x, requires_grad=float_input(x))
    params_t = [to_torch(p.value, requires_grad=True) for p in layer.parameters()]
    y_t = case.torch_ref(layer, x_t, params_t)
    y_t.backward(to_torch(g))

    def check(ours, theirs, name):
        assert_close(ours, theirs, rtol, f"{case.id} {np.dtype(dtype)} {name}")

    check(y, y_t, "forward y")
    if float_input(x):
        check(grad_x, x_t.grad, "grad_x")
    else:
        assert grad_x is None
    for p, p_t in zip(layer.parameters(), params_t, strict=True):
        check(p.grad, p_t.grad, f"{p.name}.grad")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", LAYER_CASES, ids=CASE_IDS)
def test_dtype_kept(case, dtype):
    layer, x = make(case, dtype, 1)
    y = layer.forward(x, training=True)
    assert y.dtype == dtype
    grad_x = layer.backward(np.ones_like(y))
    if float_input(x):
        assert grad_x.dtype == dtype
    for p in layer.parameters():
        assert p.value.dtype == dtype
        assert p.grad.dtype == dtype
    assert layer.forward(x, training=False).dtype == dtype


@pytest.mark.parametrize("case", LAYER_CASES, ids=CASE_IDS)
def test_nothing_cached_at_inference(case):
    layer, x = make(case, np.float32, 1)
    layer.forward(x, training=False)
    assert layer.cache is None
    with pytest.raises(RuntimeError, match=r"backward\(\) needs a preceding forward"):
        layer.backward(np.ones((x.shape[0], *layer.output_shape), np.float32))
    # An inference forward after a training one drops the training cache too.
    y = layer.forward(x, training=True)
    layer.forward(x, training=False)
    assert layer.cache is None
    with pytest.raises(RuntimeError, match="training=True"):
        layer.backward(np.ones_like(y))


@pytest.mark.parametrize("case", LAYER_CASES, ids=CASE_IDS)
def test_backward_never_changes_parameters(case):
    layer, x = make(case, np.float64, 2)
    before = [p.value.copy() for p in layer.parameters()]
    y = layer.forward(x, training=True)
    layer.backward(np.random.default_rng(0).standard_normal(y.shape))
    layer.backward(np.ones_like(y))
    for p, value in zip(layer.parameters(), before, strict=True):
        np.testing.assert_array_equal(p.value, value, err_msg=f"{case.id}: {p.name} changed")


# ---------------------------------------------------------------------- layer-specific facts
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


def test_dropout_mask_scaling_and_identity_at_inference():
    rate = 0.3
    layer = layers.Dropout(rate, seed=0)
    x = np.ones((400, 500), np.float32)
    y = layer.forward(x, training=True)
    mask = layer.cache
    assert mask.dtype == np.float32 and y.dtype == np.float32
    scale = np.float32(1.0 / (1.0 - rate))
    assert set(np.unique(mask).tolist()) == {0.0, float(scale)}
    # E[m] = (1 − rate) / (1 − rate) = 1; the sample mean of 200 000 entries has std ≈ 0.0015.
    assert abs(float(mask.mean(dtype=np.float64)) - 1.0) < 0.01
    assert abs(float(np.mean(mask == 0)) - rate) < 0.01
    np.testing.assert_array_equal(y, x * mask)
    g = np.random.default_rng(0).standard_normal(y.shape).astype(np.float32)
    np.testing.assert_array_equal(layer.backward(g), g * mask)

    x = np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)
    y = layer.forward(x, training=False)
    np.testing.assert_array_equal(y, x)
    assert layer.cache is None


def test_dropout_masks_differ_between_steps_but_repeat_with_the_seed():
    x = np.ones((8, 16), np.float64)
    first = layers.Dropout(0.5, seed=4)
    second = layers.Dropout(0.5, seed=4)
    a1 = first.forward(x, training=True)
    a2 = first.forward(x, training=True)
    b1 = second.forward(x, training=True)
    assert not np.array_equal(a1, a2)
    np.testing.assert_array_equal(a1, b1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding_repeated_ids_accumulate(dtype):
    layer = layers.Embedding(4, 3)
    layer.build((3,), rng=np.random.default_rng(0), dtype=dtype)
    ids = np.array([[2, 2, 0], [2, 1, 1]])
    y = layer.forward(ids, training=True)
    np.testing.assert_array_equal(y, layer.W.value[ids])
    g = np.arange(18, dtype=dtype).reshape(2, 3, 3)
    assert layer.backward(g) is None
    expected = np.zeros((4, 3), dtype)
    expected[2] = g[0, 0] + g[0, 1] + g[1, 0]
    expected[1] = g[1, 1] + g[1, 2]
    expected[0] = g[0, 2]
    np.testing.assert_array_equal(layer.W.grad, expected)

    W_t = to_torch(layer.W.value, requires_grad=True)
    TF.embedding(to_torch(ids), W_t).backward(to_torch(g))
    assert_close(layer.W.grad, W_t.grad, rtol_for(dtype), "embedding W.grad")


def test_leaky_relu_and_relu_at_zero_follow_torch():
    x = np.array([[0.0, -0.0, 1.0, -1.0]])
    for ours, theirs in ((layers.ReLU(), torch.relu),
                         (layers.LeakyReLU(0.2), lambda t: TF.leaky_relu(t, 0.2))):
        ours.forward(x, training=True)
        grad_x = ours.backward(np.ones_like(x))
        x_t = to_torch(x, requires_grad=True)
        theirs(x_t).backward(torch.ones_like(x_t))
        assert_close(grad_x, x_t.grad, 0.0, f"{type(ours).__name__} grad at 0")


def test_gradient_assigned_not_accumulated():
    layer = layers.Dense(2)
    layer.build((3,), rng=np.random.default_rng(0), dtype=np.float64)
    x = np.random.default_rng(1).standard_normal((4, 3))
    g = np.ones((4, 2))
    layer.forward(x, training=True)
    layer.backward(g)
    first = layer.W.grad.copy()
    layer.forward(x, training=True)
    layer.backward(g)
    np.testing.assert_array_equal(layer.W.grad, first)


# ---------------------------------------------------------------------- error messages
def test_dense_wrong_features_names_layer_shape_and_suggests_flatten():
    layer = layers.Dense(10, name="dense_1")
    layer.build((784,))
    x = np.zeros((32, 28, 28), np.float32)
    expected = ("Dense 'dense_1' expected 784 features on the last axis, got input of shape "
                "(32, 28, 28); add layers.Flatten() first")
    with pytest.raises(ValueError, match=re.escape(expected)):
        layer.forward(x)


def test_dense_wrong_features_rank2():
    layer = layers.Dense(10)
    layer.build((4,))
    with pytest.raises(ValueError, match=r"expected 4 features .* shape \(2, 5\)$"):
        layer.forward(np.zeros((2, 5), np.float32))


def test_dense_integer_input():
    with pytest.raises(TypeError, match=r"Dense 'dense' expected float32 or float64 input, got "
                                        r"dtype int64; cast with x\.astype\(np\.float32\)"):
        layers.Dense(3).forward(np.ones((2, 4), np.int64))


def test_dense_input_dtype_differs_from_weights():
    layer = layers.Dense(3)
    layer.build((4,), dtype=np.float32)
    with pytest.raises(TypeError, match="was built for float32 input, got float64"):
        layer.forward(np.ones((2, 4)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("factory", [lambda: layers.Dense(2), layers.ReLU, layers.Softmax],
                         ids=["dense", "relu", "softmax"])
def test_non_finite_input(factory, bad):
    x = np.ones((3, 4), np.float32)
    x[1, 2] = bad
    layer = factory()
    with pytest.raises(ValueError, match=rf"{type(layer).__name__} '\w+' received non-finite "
                                         r"input: 1 of 12 values are NaN or inf"):
        layer.forward(x)


@pytest.mark.parametrize("factory", [lambda: layers.Dense(2), layers.ReLU, layers.Flatten,
                                     lambda: layers.Embedding(3, 2)],
                         ids=["dense", "relu", "flatten", "embedding"])
def test_empty_batch(factory):
    x = np.zeros((0, 4), np.int64 if factory().integer_input else np.float32)
    with pytest.raises(ValueError, match=r"received an empty batch \(shape \(0, 4\)\)"):
        factory().forward(x)


def test_backward_without_training_forward():
    layer = layers.Dense(2)
    with pytest.raises(RuntimeError, match=r"Dense 'dense': backward\(\) needs a preceding "
                                           r"forward\(x, training=True\)"):
        layer.backward(np.ones((1, 2), np.float32))


@pytest.mark.parametrize("case", LAYER_CASES[:1] + LAYER_CASES[-3:], ids=lambda c: c.id)
def test_grad_y_of_wrong_shape(case):
    layer, x = make(case, np.float32, 1)
    y = layer.forward(x, training=True)
    wrong = np.ones((y.shape[0] + 1, *y.shape[1:]), np.float32)
    with pytest.raises(ValueError, match=re.escape(
            f"backward expected grad_y of shape {y.shape} (the output shape of the last "
            f"forward), got {wrong.shape}")):
        layer.backward(wrong)


def test_grad_y_of_wrong_dtype():
    layer = layers.Tanh()
    layer.forward(np.ones((2, 3), np.float32), training=True)
    with pytest.raises(TypeError, match="grad_y of dtype float32, got float64"):
        layer.backward(np.ones((2, 3)))


def test_unknown_activation_and_initializer():
    with pytest.raises(ValueError, match=r"unknown activation 'relux'; expected one of \["):
        layers.Dense(3, activation="relux")
    with pytest.raises(ValueError, match=r"unknown initializer 'he'; expected one of \["):
        layers.Dense(3, kernel_initializer="he")
    with pytest.raises(ValueError, match=r"unknown initializer 'one'"):
        layers.Dense(3, bias_initializer="one")
    with pytest.raises(ValueError, match=r"unknown initializer 'uniform'"):
        layers.Embedding(3, 2, embeddings_initializer="uniform")


def test_embedding_errors():
    layer = layers.Embedding(5, 2)
    with pytest.raises(TypeError, match=r"Embedding 'embedding' expected integer ids, got dtype "
                                        r"float32"):
        layer.forward(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"expected ids in \[0, 5\), got values in \[0, 5\]"):
        layer.forward(np.array([[0, 5]]))
    with pytest.raises(ValueError, match=r"expected ids in \[0, 5\), got values in \[-1, 2\]"):
        layer.forward(np.array([[-1, 2]]))


def test_dropout_rate_out_of_range():
    with pytest.raises(ValueError, match=r"rate must lie in \[0, 1\), got 1.0"):
        layers.Dropout(1.0)
