"""RNN, LSTM and GRU facts beyond the table (tests/cases.py): a given initial state against
torch's h0/c0 (and its gradient), the gates' bias gradients, errors that name the layer, and
training inside a Sequential."""

import re

import numpy as np
import pytest
from torch import nn

import chainrule as cr
from chainrule import layers
from helpers import DTYPES, TORCH_DTYPE, assert_close, assert_close_to_scale, rtol_for, to_torch


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", [layers.RNN, layers.LSTM, layers.GRU], ids=lambda c: c.__name__)
def test_given_initial_state_matches_torch(cls, dtype):
    """forward(x, initial_state=…) against torch's (h0[, c0]) argument, and
    layer.initial_state_grad against torch's h0.grad (c0.grad)."""
    rng = np.random.default_rng(3)
    n, t, d, h = 3, 4, 2, 5
    layer = cls(h, return_sequences=True)
    layer.build((t, d), rng=rng, dtype=dtype)
    x = rng.standard_normal((n, t, d)).astype(dtype)
    states = [rng.standard_normal((n, h)).astype(dtype) for _ in cls.STATES]
    given = tuple(states) if cls is layers.LSTM else states[0]
    y = layer.forward(x, training=True, initial_state=given)
    g = rng.standard_normal(y.shape).astype(dtype)
    grad_x = layer.backward(g)

    module = {layers.RNN: nn.RNN, layers.LSTM: nn.LSTM, layers.GRU: nn.GRU}[cls]
    m = module(d, h, batch_first=True).to(TORCH_DTYPE[np.dtype(dtype)])
    m.load_state_dict({"weight_ih_l0": to_torch(layer.W_ih.value.T.copy()),
                       "weight_hh_l0": to_torch(layer.W_hh.value.T.copy()),
                       "bias_ih_l0": to_torch(layer.b_ih.value),
                       "bias_hh_l0": to_torch(layer.b_hh.value)})
    x_t = to_torch(x, requires_grad=True)
    states_t = [to_torch(s[None], requires_grad=True) for s in states]
    out, _ = m(x_t, tuple(states_t) if cls is layers.LSTM else states_t[0])
    out.backward(to_torch(g))
    rtol = rtol_for(dtype)
    assert_close(y, out, rtol, f"{cls.__name__} y with a given state")
    assert_close_to_scale(grad_x, x_t.grad, rtol, f"{cls.__name__} grad_x")
    ours = layer.initial_state_grad if cls is layers.LSTM else (layer.initial_state_grad,)
    for name, mine, theirs in zip(("dL/dh0", "dL/dc0"), ours, states_t, strict=False):
        assert_close_to_scale(mine, theirs.grad[0], rtol, f"{cls.__name__} {name}")
    # The given state was for that call only: the next call starts from zeros again.
    np.testing.assert_array_equal(layer.forward(x), _zero_state_forward(layer, x))


def _zero_state_forward(layer, x):
    zeros = np.zeros((x.shape[0], layer.units), layer.dtype)
    state = (zeros, zeros) if isinstance(layer, layers.LSTM) else zeros
    return layer.forward(x, initial_state=state)


def test_initial_state_errors():
    rnn = layers.RNN(4, name="rnn")
    x = np.zeros((2, 3, 5), np.float32)
    with pytest.raises(ValueError, match=re.escape(
            "RNN 'rnn': initial state h₀ must have shape (2, 4) (batch, units), got (2, 5)")):
        rnn.forward(x, initial_state=np.zeros((2, 5), np.float32))
    with pytest.raises(TypeError, match="initial state h₀ must have the layer's dtype float32, "
                                        "got float64"):
        rnn.forward(x, initial_state=np.zeros((2, 4)))
    lstm = layers.LSTM(4, name="lstm")
    with pytest.raises(TypeError, match=re.escape(
            "LSTM 'lstm': initial_state must be a pair (h0, c0) of arrays of shape (2, 4)")):
        lstm.forward(x, initial_state=np.zeros((2, 4), np.float32))
    bad = np.zeros((2, 4), np.float32)
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"LSTM 'lstm' \(initial state c₀\) received non-finite"):
        lstm.forward(x, initial_state=(np.zeros((2, 4), np.float32), bad))


@pytest.mark.parametrize("cls", [layers.RNN, layers.LSTM, layers.GRU], ids=lambda c: c.__name__)
def test_recurrent_shape_errors_name_the_layer(cls):
    layer = cls(3, name="rec")
    label = f"{cls.__name__} 'rec'"
    with pytest.raises(ValueError, match=re.escape(
            f"{label} expected input of shape (N, T, features), got input of shape (8, 5); add "
            "a time axis")):
        layer.forward(np.zeros((8, 5), np.float32))
    layer.forward(np.zeros((2, 4, 5), np.float32))
    with pytest.raises(ValueError, match=re.escape(
            f"{label} expected 5 features on the last axis, got input of shape (2, 4, 6)")):
        layer.forward(np.zeros((2, 4, 6), np.float32))
    with pytest.raises(ValueError, match="units must be a positive integer, got 0"):
        cls(0)


def test_recurrent_bias_gradients_follow_the_gates():
    """RNN and LSTM use b_ih + b_hh as one sum: equal gradients. GRU's reset gate multiplies the
    hidden-side candidate term, b_hn included: r and z blocks equal, n blocks differ by r."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 2))
    for cls in (layers.RNN, layers.LSTM):
        layer = cls(3, return_sequences=True)
        y = layer.forward(x, training=True)
        layer.backward(rng.standard_normal(y.shape))
        np.testing.assert_array_equal(layer.b_ih.grad, layer.b_hh.grad)
    gru = layers.GRU(3, return_sequences=True)
    y = gru.forward(x, training=True)
    gru.backward(rng.standard_normal(y.shape))
    np.testing.assert_array_equal(gru.b_ih.grad[:6], gru.b_hh.grad[:6])
    assert not np.allclose(gru.b_ih.grad[6:], gru.b_hh.grad[6:])


@pytest.mark.parametrize("cls", [layers.RNN, layers.LSTM, layers.GRU], ids=lambda c: c.__name__)
def test_recurrent_layer_trains_inside_a_sequential(cls):
    """Zero initial state by default, so the layer works in a Sequential: fit lowers the loss of
    "is the sum of the sequence positive?" and the model saves and loads."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 6, 2)).astype(np.float32)
    y = (x.sum(axis=(1, 2)) > 0).astype(np.int64)
    model = cr.Sequential([cls(8, input_shape=(6, 2)), layers.Dense(2)], seed=0)
    model.compile(cr.optimizers.Adam(0.02), cr.losses.SparseCategoricalCrossEntropy(
        from_logits=True))
    history = model.fit(x, y, epochs=8, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < 0.6 * history.history["loss"][0]
