"""The base class's input checks and the layers' construction errors: every message says what
was expected, what came, and the fix. (grad_y's shape and dtype checks run on every row of the
table, tests/cases.py.)"""

import re

import numpy as np
import pytest

from chainrule import layers


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


def test_unknown_activation_and_initializer():
    with pytest.raises(ValueError, match=r"unknown activation 'relux'; expected one of \["):
        layers.Dense(3, activation="relux")
    with pytest.raises(ValueError, match=r"unknown initializer 'he'; expected one of \["):
        layers.Dense(3, kernel_initializer="he")
    with pytest.raises(ValueError, match=r"unknown initializer 'one'"):
        layers.Dense(3, bias_initializer="one")
    with pytest.raises(ValueError, match=r"unknown initializer 'uniform'"):
        layers.Embedding(3, 2, embeddings_initializer="uniform")
