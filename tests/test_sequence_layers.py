"""The sequence layers against finite differences and PyTorch autograd, driven by one table.

Each row of SEQ_CASES is self-contained: (id, chainrule factory, input maker, torch reference
factory). The torch factory receives our layer (built, after its training forward) and returns
a TorchRef: torch's forward with our weights copied into torch's own modules (nn.RNN, nn.LSTM,
nn.GRU, nn.LayerNorm, nn.Linear) or functions (F.gelu, F.scaled_dot_product_attention), and
torch's parameter gradients keyed by our parameter names, in our layout. Every row goes through
the same checks: gradcheck in float64, equality with torch in float32 and float64 (forward,
dL/dx, every parameter gradient), float32 kept in every intermediate (the Spy of test_dtype),
nothing cached at inference, backward never changes a parameter, get_config round trip.

Seed 0 draws a batch of one; the rows cover return_sequences on and off, T = 1 and T > 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from torch import nn

import chainrule as cr
from chainrule import layers
from chainrule.layers import Layer
from test_dtype import Spy
from torch_helpers import DTYPES, assert_close, assert_close_to_scale, rtol_for, to_torch

SEEDS = (0, 1, 2)
TORCH_DTYPE = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


def batch_size(rng: np.random.Generator, seed: int) -> int:
    """Batch 1 for seed 0, a random small batch otherwise."""
    return 1 if seed == 0 else int(rng.integers(2, 5))


# ---------------------------------------------------------------------- input makers
def sequences(steps: int, features: int, scale: float = 1.0):
    """(N, T, D) normal values times ``scale``."""
    def make(rng, n, dtype):
        return (scale * rng.standard_normal((n, steps, features))).astype(dtype)
    make.__name__ = f"sequences_{steps}x{features}"
    return make


def rows(features: int):
    def make(rng, n, dtype):
        return rng.standard_normal((n, features)).astype(dtype)
    return make


def wide_range(rng, n, dtype):
    """(N, 4, 6) values over ±12 with ±1e-3 and ±6 planted: GELU's tails and its middle."""
    x = 4.0 * rng.standard_normal((n, 4, 6))
    x[:, 0, :4] = [1e-3, -1e-3, 6.0, -6.0]
    x[:, 1, :2] = [12.0, -12.0]
    return x.astype(dtype)


# ---------------------------------------------------------------------- torch references
@dataclass
class TorchRef:
    """torch's forward (x tensor → y tensor) and, after its backward, torch's gradient of each of
    our parameters (by our name, in our layout)."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    grads: Callable[[], dict[str, torch.Tensor]]


def _copy(param: torch.Tensor, value: np.ndarray) -> None:
    with torch.no_grad():
        param.copy_(to_torch(np.ascontiguousarray(value)))


def torch_recurrent(layer) -> TorchRef:
    """nn.RNN / nn.LSTM / nn.GRU (batch_first) with weight_ih_l0 = W_ihᵀ, weight_hh_l0 = W_hhᵀ."""
    module = {layers.RNN: nn.RNN, layers.LSTM: nn.LSTM, layers.GRU: nn.GRU}[type(layer)]
    d, h = layer.W_ih.value.shape[0], layer.units
    m = module(d, h, batch_first=True).to(TORCH_DTYPE[layer.dtype])
    _copy(m.weight_ih_l0, layer.W_ih.value.T)
    _copy(m.weight_hh_l0, layer.W_hh.value.T)
    _copy(m.bias_ih_l0, layer.b_ih.value)
    _copy(m.bias_hh_l0, layer.b_hh.value)
    learned = {"h0": layer.h0, "c0": layer.c0}
    states = {k: to_torch(p.value, requires_grad=True) for k, p in learned.items() if p is not None}

    def forward(x):
        init = None
        if states:
            full = [states[k].expand(x.shape[0], h)[None] for k in ("h0", "c0") if k in states]
            init = tuple(full) if len(full) == 2 else full[0]
        out, _ = m(x, init)
        return out if layer.return_sequences else out[:, -1]

    def grads():
        found = {"W_ih": m.weight_ih_l0.grad.T, "W_hh": m.weight_hh_l0.grad.T,
                 "b_ih": m.bias_ih_l0.grad, "b_hh": m.bias_hh_l0.grad}
        found.update({k: t.grad for k, t in states.items()})
        return found

    return TorchRef(forward, grads)


def torch_layernorm(layer) -> TorchRef:
    m = nn.LayerNorm(layer.gamma.value.shape[0], eps=layer.eps).to(TORCH_DTYPE[layer.dtype])
    _copy(m.weight, layer.gamma.value)
    _copy(m.bias, layer.beta.value)
    return TorchRef(m, lambda: {"gamma": m.weight.grad, "beta": m.bias.grad})


def torch_gelu(layer) -> TorchRef:
    return TorchRef(lambda x: TF.gelu(x, approximate=layer.approximate), dict)


def torch_dropout(layer) -> TorchRef:
    # Dropout is random: apply *our* mask, so the comparison checks y = x ⊙ m and dL/dx = g ⊙ m.
    return TorchRef(lambda x: x * to_torch(layer.cache), dict)


def torch_dense(layer) -> TorchRef:
    m = nn.Linear(*layer.W.value.shape).to(TORCH_DTYPE[layer.dtype])
    _copy(m.weight, layer.W.value.T)
    _copy(m.bias, layer.b.value)
    return TorchRef(m, lambda: {"W": m.weight.grad.T, "b": m.bias.grad})


def torch_attention(layer) -> TorchRef:
    """GPT-2's attention in torch: c_attn = nn.Linear(E, 3E), heads split, causal SDPA, c_proj.

    Without dropout the reference is F.scaled_dot_product_attention(is_causal=True); with our
    dropout mask (from the layer's training cache) it is the masked reference written out:
    softmax(Q Kᵀ/√d with −∞ above the diagonal) ⊙ mask, times V.
    """
    e, heads = layer.W_out.value.shape[0], layer.heads
    dtype = TORCH_DTYPE[layer.dtype]
    c_attn, c_proj = nn.Linear(e, 3 * e).to(dtype), nn.Linear(e, e).to(dtype)
    _copy(c_attn.weight, layer.W_qkv.value.T)
    _copy(c_attn.bias, layer.b_qkv.value)
    _copy(c_proj.weight, layer.W_out.value.T)
    _copy(c_proj.bias, layer.b_out.value)

    def forward(x):
        n, t, _ = x.shape
        q, k, v = (a.view(n, t, heads, e // heads).transpose(1, 2)
                   for a in c_attn(x).split(e, dim=-1))
        mask = layer.cache[5] if layer.cache is not None else None
        if mask is None:
            o = TF.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            s = q @ k.transpose(-2, -1) / math.sqrt(e // heads)
            s = s.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
            o = (torch.softmax(s, dim=-1) * to_torch(mask)) @ v
        return c_proj(o.transpose(1, 2).reshape(n, t, e))

    return TorchRef(forward, lambda: {"W_qkv": c_attn.weight.grad.T, "b_qkv": c_attn.bias.grad,
                                      "W_out": c_proj.weight.grad.T, "b_out": c_proj.bias.grad})


def torch_positional(layer) -> TorchRef:
    W = to_torch(layer.W.value, requires_grad=True)
    return TorchRef(lambda x: x + W[:x.shape[1]], lambda: {"W": W.grad})


def torch_residual(layer) -> TorchRef:
    """x + the block, each inner layer through its own reference; grads named <layer>/<name>."""
    refs = [(inner.name, TORCH_REFS[type(inner)](inner)) for inner in layer.layers]

    def forward(x):
        out = x
        for _, ref in refs:
            out = ref.forward(out)
        return x + out

    def grads():
        return {f"{name}/{k}": g for name, ref in refs for k, g in ref.grads().items()}

    return TorchRef(forward, grads)


TORCH_REFS = {
    layers.RNN: torch_recurrent,
    layers.LSTM: torch_recurrent,
    layers.GRU: torch_recurrent,
    layers.LayerNorm: torch_layernorm,
    layers.GELU: torch_gelu,
    layers.Dropout: torch_dropout,
    layers.Dense: torch_dense,
    layers.CausalSelfAttention: torch_attention,
    layers.PositionalEmbedding: torch_positional,
    layers.Residual: torch_residual,
}


# ---------------------------------------------------------------------- the table
@dataclass(frozen=True)
class SeqCase:
    id: str
    factory: Callable[[], Layer]
    make_input: Callable[[np.random.Generator, int, type], np.ndarray]
    torch_ref: Callable[[Layer], TorchRef]
    # Outputs that are sums of terms which can cancel to near 0 (a projection's output, x + f(x),
    # GELU's 1 + erf(x/√2) or 1 + tanh u far in the negative tail): their float32 rounding is a
    # fraction of the terms' size, not of the entry's, so the forward is compared to the
    # array's scale (as every gradient is). Entry-wise otherwise.
    forward_cancels: bool = False


def _recurrent_rows(cls, name):
    return [
        SeqCase(f"{name}_seq_T5", lambda: cls(4, return_sequences=True), sequences(5, 3),
                torch_recurrent),
        SeqCase(f"{name}_last_T5", lambda: cls(4), sequences(5, 3), torch_recurrent),
        SeqCase(f"{name}_seq_T1", lambda: cls(3, return_sequences=True), sequences(1, 2),
                torch_recurrent),
        SeqCase(f"{name}_last_T1", lambda: cls(5), sequences(1, 3), torch_recurrent),
        SeqCase(f"{name}_learned_state", lambda: cls(4, return_sequences=True,
                                                     learn_initial_state=True),
                sequences(4, 3), torch_recurrent),
    ]


SEQ_CASES = [
    *_recurrent_rows(layers.RNN, "rnn"),
    *_recurrent_rows(layers.LSTM, "lstm"),
    *_recurrent_rows(layers.GRU, "gru"),
    SeqCase("layernorm_seq", layers.LayerNorm, sequences(4, 6), torch_layernorm),
    SeqCase("layernorm_rows", layers.LayerNorm, rows(5), torch_layernorm),
    SeqCase("layernorm_eps", lambda: layers.LayerNorm(eps=1e-2), sequences(3, 4, scale=0.1),
            torch_layernorm),
    SeqCase("gelu", layers.GELU, sequences(4, 5), torch_gelu),
    SeqCase("gelu_tanh", lambda: layers.GELU("tanh"), sequences(4, 5), torch_gelu),
    SeqCase("gelu_wide_range", layers.GELU, wide_range, torch_gelu, forward_cancels=True),
    SeqCase("gelu_tanh_wide_range", lambda: layers.GELU("tanh"), wide_range, torch_gelu,
            forward_cancels=True),
    SeqCase("dropout_seq", lambda: layers.Dropout(0.3, seed=5), sequences(4, 5), torch_dropout),
    SeqCase("attention_1head_T1", lambda: layers.CausalSelfAttention(1), sequences(1, 4),
            torch_attention, forward_cancels=True),
    SeqCase("attention_2heads_T5", lambda: layers.CausalSelfAttention(2), sequences(5, 6),
            torch_attention, forward_cancels=True),
    SeqCase("attention_4heads_T7", lambda: layers.CausalSelfAttention(4), sequences(7, 8),
            torch_attention, forward_cancels=True),
    SeqCase("attention_dropout", lambda: layers.CausalSelfAttention(2, dropout=0.3, seed=3),
            sequences(6, 4), torch_attention, forward_cancels=True),
    SeqCase("positional_T_below_max", lambda: layers.PositionalEmbedding(8), sequences(5, 3),
            torch_positional),
    SeqCase("positional_T_at_max", lambda: layers.PositionalEmbedding(6), sequences(6, 4),
            torch_positional),
    SeqCase("positional_T1", lambda: layers.PositionalEmbedding(4), sequences(1, 3),
            torch_positional),
    SeqCase("residual_attention",
            lambda: layers.Residual([layers.LayerNorm(), layers.CausalSelfAttention(2)]),
            sequences(5, 6), torch_residual, forward_cancels=True),
    SeqCase("residual_mlp",
            lambda: layers.Residual([layers.LayerNorm(), layers.Dense(12),
                                     layers.GELU("tanh"), layers.Dense(4)]),
            sequences(3, 4), torch_residual, forward_cancels=True),
    SeqCase("residual_mlp_dropout",
            lambda: layers.Residual([layers.Dense(8), layers.GELU(), layers.Dropout(0.25),
                                     layers.Dense(5)], seed=11),
            sequences(3, 5), torch_residual, forward_cancels=True),
    SeqCase("residual_single_layer", lambda: layers.Residual(layers.Dense(3)), sequences(2, 3),
            torch_residual, forward_cancels=True),
    SeqCase("residual_lstm",
            lambda: layers.Residual(layers.LSTM(3, return_sequences=True)), sequences(4, 3),
            torch_residual, forward_cancels=True),
    SeqCase("residual_nested",
            lambda: layers.Residual([layers.Residual([layers.LayerNorm(), layers.Dense(4)]),
                                     layers.GELU()]),
            sequences(2, 4), torch_residual, forward_cancels=True),
]
CASE_IDS = [case.id for case in SEQ_CASES]


def make(case: SeqCase, dtype, seed: int) -> tuple[Layer, np.ndarray]:
    """A layer built in ``dtype`` from ``seed``, every parameter moved off its initial value
    (LayerNorm's γ = 1 and β = 0, zero biases) so that each gradient is exercised, and an
    input batch for it."""
    rng = np.random.default_rng(seed)
    x = case.make_input(rng, batch_size(rng, seed), dtype)
    layer = case.factory()
    layer.build(x.shape[1:], rng=rng, dtype=dtype)
    for p in layer.parameters():
        p.value += (0.1 * rng.standard_normal(p.shape)).astype(dtype)
    return layer, x


# ---------------------------------------------------------------------- the checks
@pytest.mark.parametrize("seed", SEEDS[:2])
@pytest.mark.parametrize("case", SEQ_CASES, ids=CASE_IDS)
def test_gradcheck_float64(case, seed):
    layer, x = make(case, np.float64, seed)
    report = cr.gradcheck(layer, x, seed=seed, max_entries=60)
    assert [e.name for e in report.entries] == ["input"] + [p.name for p in layer.parameters()]
    assert all(e.checked > 0 and e.kinks == 0 for e in report.entries), str(report)
    assert report.ok, str(report)
    assert report.max_rel_error < 1e-6, str(report)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SEQ_CASES, ids=CASE_IDS)
def test_matches_torch(case, dtype, seed):
    layer, x = make(case, dtype, seed)
    rtol = rtol_for(dtype)
    y = layer.forward(x, training=True)
    g = np.random.default_rng(100 + seed).standard_normal(y.shape).astype(dtype)
    grad_x = layer.backward(g)

    ref = case.torch_ref(layer)
    x_t = to_torch(x, requires_grad=True)
    y_t = ref.forward(x_t)
    y_t.backward(to_torch(g))
    label = f"{case.id} {np.dtype(dtype)}"
    # Gradients are sums over the batch, the steps and the features of terms that cancel
    # (LayerNorm's dL/dx sums to 0 over a row; a key bias's gradient is 0 up to rounding), so
    # they are compared relative to the array's scale; outputs entry-wise unless they cancel too.
    compare_y = assert_close_to_scale if case.forward_cancels else assert_close
    compare_y(y, y_t, rtol, f"{label} forward y")
    assert_close_to_scale(grad_x, x_t.grad, rtol, f"{label} grad_x")
    grads = ref.grads()
    assert sorted(grads) == sorted(p.name for p in layer.parameters())
    for p in layer.parameters():
        assert_close_to_scale(p.grad, grads[p.name], rtol, f"{label} {p.name}.grad")


def spy_arrays(obj):
    """The floating arrays in a cache (an array, a tuple of them, or None)."""
    items = obj if isinstance(obj, tuple) else (obj,)
    return [a for a in items if isinstance(a, np.ndarray) and a.dtype.kind == "f"]


def all_layers(layer):
    return [layer] + [inner for sub in getattr(layer, "layers", []) for inner in all_layers(sub)]


@pytest.mark.parametrize("case", SEQ_CASES, ids=CASE_IDS)
def test_float32_kept_everywhere(case):
    """No float64 operand or result anywhere in forward and backward (test_dtype's Spy), and
    every output, cache and gradient float32."""
    layer, x = make(case, np.float32, 1)
    for p in layer.parameters():
        p.value = p.value.view(Spy)
    Spy.log = []
    try:
        y = layer._call(x.view(Spy), training=True)
        caches = [a for sub in all_layers(layer) for a in spy_arrays(sub.cache)]
        grad_x = layer._backward(np.ones_like(y).view(Spy), True)
        log = list(Spy.log)
    finally:
        Spy.log = []
    assert log == [], f"float64 inside {case.id}: {sorted(set(log))}"
    arrays = [("y", y), ("grad_x", grad_x)] + [("cache", a) for a in caches]
    arrays += [(f"{p.name}.grad", p.grad) for p in layer.parameters()]
    wrong = [(name, a.dtype) for name, a in arrays if a.dtype != np.float32]
    assert wrong == []
    assert layer.forward(x, training=False).dtype == np.float32


@pytest.mark.parametrize("case", SEQ_CASES, ids=CASE_IDS)
def test_nothing_cached_at_inference(case):
    layer, x = make(case, np.float32, 1)
    layer.forward(x, training=False)
    assert all(sub.cache is None for sub in all_layers(layer))
    with pytest.raises(RuntimeError, match=r"backward\(\) needs a preceding forward"):
        layer.backward(np.ones((x.shape[0], *layer.output_shape), np.float32))
    y = layer.forward(x, training=True)
    layer.forward(x, training=False)
    assert all(sub.cache is None for sub in all_layers(layer))
    with pytest.raises(RuntimeError, match="training=True"):
        layer.backward(np.ones_like(y))


@pytest.mark.parametrize("case", SEQ_CASES, ids=CASE_IDS)
def test_backward_never_changes_parameters(case):
    layer, x = make(case, np.float64, 2)
    before = [p.value.copy() for p in layer.parameters()]
    y = layer.forward(x, training=True)
    layer.backward(np.random.default_rng(0).standard_normal(y.shape))
    layer.backward(np.ones_like(y))
    for p, value in zip(layer.parameters(), before, strict=True):
        np.testing.assert_array_equal(p.value, value, err_msg=f"{case.id}: {p.name} changed")


@pytest.mark.parametrize("case", SEQ_CASES, ids=CASE_IDS)
def test_config_round_trip(case):
    """from_config(get_config()) rebuilds the same layer: same config, parameter names and
    shapes, and with the weights copied the same output."""
    layer, x = make(case, np.float64, 1)
    twin = type(layer).from_config(layer.get_config())
    assert twin.get_config() == layer.get_config()
    twin.build(layer.input_shape, dtype=np.float64)
    assert [(p.name, p.shape) for p in twin.parameters()] == [
        (p.name, p.shape) for p in layer.parameters()]
    for mine, theirs in zip(twin.parameters(), layer.parameters(), strict=True):
        mine.value[...] = theirs.value
    np.testing.assert_array_equal(twin.forward(x), layer.forward(x))
