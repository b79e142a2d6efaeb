"""Embedding and PositionalEmbedding facts beyond the table (tests/cases.py): repeated ids
accumulate, ids checked in and out of a Sequential, positions past the context, errors."""

import re

import numpy as np
import pytest
import torch.nn.functional as TF

import chainrule as cr
from chainrule import layers
from helpers import DTYPES, assert_close, rtol_for, to_torch


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


def test_embedding_errors():
    layer = layers.Embedding(5, 2)
    with pytest.raises(TypeError, match=r"Embedding 'embedding' expected integer ids, got dtype "
                                        r"float32"):
        layer.forward(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"expected ids in \[0, 5\), got values in \[0, 5\]"):
        layer.forward(np.array([[0, 5]]))
    with pytest.raises(ValueError, match=r"expected ids in \[0, 5\), got values in \[-1, 2\]"):
        layer.forward(np.array([[-1, 2]]))


@pytest.mark.parametrize("ids", [[[0, 1, 10]], [[-1, 0, 2]]], ids=["too_large", "negative"])
def test_embedding_ids_checked_inside_a_sequential(ids):
    """A Sequential calls its layers past their public forward; the id range is still checked
    (a negative id used to pick a row from the end of the table without a word)."""
    model = cr.Sequential([layers.Embedding(10, 4, input_shape=(3,)), layers.Flatten(),
                           layers.Dense(2)])
    with pytest.raises(ValueError, match=r"Embedding 'embedding_1' expected ids in \[0, 10\)"):
        model.predict(np.array(ids))


def test_positional_embedding_refuses_a_longer_context():
    layer = layers.PositionalEmbedding(4, name="pos")
    expected = ("PositionalEmbedding 'pos' holds positions for contexts of up to max_length = 4, "
                "got input of shape (2, 5, 3) (T = 5); shorten the context to 4 or build the "
                "layer with max_length >= 5")
    with pytest.raises(ValueError, match=re.escape(expected)):
        layer.forward(np.zeros((2, 5, 3), np.float32))
    layer.forward(np.zeros((2, 3, 3), np.float32))
    with pytest.raises(ValueError, match=re.escape(expected.replace("(2, 5, 3)", "(1, 5, 3)"))):
        layer.forward(np.zeros((1, 5, 3), np.float32))
    # A model built for a longer context is refused at build, naming the layer.
    with pytest.raises(ValueError, match=r"PositionalEmbedding 'positionalembedding_1' holds "
                                         r"positions for contexts of up to max_length = 4, got "
                                         r"input of shape \(N, 6, 8\)"):
        cr.Sequential([layers.Embedding(10, 8, input_shape=(6,)), layers.PositionalEmbedding(4)])


def test_positional_embedding_rank_and_width_errors():
    layer = layers.PositionalEmbedding(4, name="pos")
    with pytest.raises(ValueError, match=re.escape(
            "PositionalEmbedding 'pos' expected input of shape (N, T, E), got input of shape "
            "(2, 3); token ids (N, T) go through an Embedding first")):
        layer.forward(np.zeros((2, 3), np.float32))
    layer.forward(np.zeros((2, 3, 5), np.float32))
    with pytest.raises(ValueError, match="expected 5 features on the last axis"):
        layer.forward(np.zeros((2, 3, 6), np.float32))


def test_positional_rows_past_the_context_get_zero_gradient():
    layer = layers.PositionalEmbedding(6)
    g = np.random.default_rng(0).standard_normal((3, 4, 2))
    layer.forward(np.zeros((3, 4, 2)), training=True)
    assert layer.backward(g) is g
    np.testing.assert_array_equal(layer.W.grad[:4], g.sum(axis=0))
    np.testing.assert_array_equal(layer.W.grad[4:], 0.0)
