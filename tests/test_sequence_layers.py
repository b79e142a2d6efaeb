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
import re
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
from helpers import DTYPES, Spy, assert_close, assert_close_to_scale, rtol_for, to_torch

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


# ---------------------------------------------------------------------- erf and GELU
def erf_points(dtype):
    """Normal draws, a dense grid over ±7, tiny values and every branch boundary of fdlibm."""
    rng = np.random.default_rng(0)
    bounds = [2.0**-28, 0.84375, 1.25, 2.857142857142857, 2.8571434020996094, 6.0]
    special = [0.0, -0.0, 1e-300, 5e-324, 1e-30, 1e-10, 1e-5, 0.5, 1.0, 3.0, 5.9, 27.0, 1e300]
    values = np.concatenate([
        3.0 * rng.standard_normal(20000), np.linspace(-7.0, 7.0, 20001), special,
        [b * f for b in bounds for f in (1.0 - 1e-15, 1.0, 1.0 + 1e-15)],
    ])
    values = np.concatenate([values, -values])
    if dtype == np.float32:
        values = values[np.abs(values) < 1e38]
    return values.astype(dtype)


def test_erf_matches_torch_and_math_in_float64():
    x = erf_points(np.float64)
    ours = cr.special.erf(x)
    theirs = torch.erf(to_torch(x)).numpy()
    assert ours.dtype == np.float64
    assert_close(ours, theirs, 1e-15, "erf float64 vs torch", atol=1e-300)
    exact = np.array([math.erf(v) for v in x])
    ulps = np.abs(ours - exact) / np.spacing(np.maximum(np.abs(exact), 1e-300))
    assert ulps.max() <= 1.0, f"erf is {ulps.max()} ulps from math.erf at x = {x[ulps.argmax()]}"


def test_erf_float32_stays_float32_and_matches_torch():
    x = erf_points(np.float32)
    Spy.log = []
    try:
        ours = cr.special.erf(x.view(Spy))
        log = list(Spy.log)
    finally:
        Spy.log = []
    assert log == [] and ours.dtype == np.float32
    theirs = torch.erf(to_torch(x)).numpy()
    # Both are accurate to about one float32 ulp (6e-8 near ±1).
    assert_close(ours, theirs, 3e-7, "erf float32 vs torch", atol=1e-37)


def test_erf_special_values():
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 6.0, -40.0])
    y = cr.special.erf(x)
    assert y[0] == 0.0 and not np.signbit(y[0]) and y[1] == 0.0 and np.signbit(y[1])
    np.testing.assert_array_equal(y[2:4], [1.0, -1.0])
    assert np.isnan(y[4])
    np.testing.assert_array_equal(y[5:], [1.0, -1.0])
    with pytest.raises(TypeError, match="erf expected a float32 or float64 array, got dtype int64"):
        cr.special.erf(np.arange(3))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_matches_torch_to_1e12_in_float64(approximate):
    """Both forms on a dense grid, forward and derivative, entry-wise to 1e-12 on [−3, 6]
    (with an absolute 1e-16 where the derivative crosses 0, at GELU's minimum x ≈ −0.75).

    Below −3 the value is a product with 1 + erf(x/√2) (1 + tanh u), which cancels, and the
    tanh form's derivative is a difference of two terms 100× larger than itself: one ulp of
    tanh (np.tanh and torch's differ by that) then moves the result by more than 1e-12 of
    itself, in torch as here. There both are compared relative to the array's scale.
    """
    layer = layers.GELU(approximate)
    def entrywise(ours, theirs, rtol, name):
        assert_close(ours, theirs, rtol, name, atol=1e-16)

    for lo, hi, compare in ((-3.0, 6.0, entrywise), (-12.0, -3.0, assert_close_to_scale)):
        x = np.linspace(lo, hi, 90001)
        y = layer.forward(x, training=True)
        slope = layer.backward(np.ones_like(x))
        x_t = to_torch(x, requires_grad=True)
        y_t = TF.gelu(x_t, approximate=approximate)
        y_t.backward(torch.ones_like(x_t))
        compare(y, y_t, 1e-12, f"gelu {approximate} y on [{lo}, {hi}]")
        compare(slope, x_t.grad, 1e-12, f"gelu {approximate} dy/dx on [{lo}, {hi}]")


def test_gelu_is_an_activation_name():
    model = cr.Sequential([layers.Dense(3, activation="gelu", input_shape=(2,))])
    assert [type(layer).__name__ for layer in model.layers] == ["Dense", "GELU"]
    assert model.layers[1].approximate == "none"
    with pytest.raises(ValueError, match="approximate must be 'none' .* or 'tanh', got 'erf'"):
        layers.GELU("erf")


# ---------------------------------------------------------------------- recurrent layers
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


# ---------------------------------------------------------------------- LayerNorm
@pytest.mark.parametrize("eps", [1e-5, 1e-14])
def test_layernorm_input_gradient_is_orthogonal_to_ones_and_x_hat(eps):
    """Shifting a row leaves x̂ unchanged, so Σⱼ dL/dxⱼ = 0; scaling it too, up to ε, so
    Σⱼ x̂ⱼ dL/dxⱼ = (ε/(σ² + ε))(1/σ) Σⱼ ĝⱼ x̂ⱼ (see the docstring)."""
    rng = np.random.default_rng(0)
    layer = layers.LayerNorm(eps=eps)
    layer.build((5, 7), dtype=np.float64)
    layer.gamma.value[:] = rng.standard_normal(7)
    x = 3.0 + 2.0 * rng.standard_normal((4, 5, 7))
    layer.forward(x, training=True)
    g = rng.standard_normal(x.shape)
    grad_x = layer.backward(g)
    x_hat, inv_std = layer.cache
    np.testing.assert_allclose(grad_x.sum(axis=-1), 0.0, atol=1e-13)
    var = x.var(axis=-1, keepdims=True)
    g_hat = g * layer.gamma.value
    expected = (eps / (var + eps)) * inv_std * np.sum(g_hat * x_hat, axis=-1, keepdims=True)
    np.testing.assert_allclose(np.sum(grad_x * x_hat, axis=-1, keepdims=True), expected,
                               rtol=1e-6, atol=1e-13)


def test_layernorm_errors():
    layer = layers.LayerNorm(name="ln")
    with pytest.raises(ValueError, match=re.escape(
            "LayerNorm 'ln' expected input of shape (N, D) or (N, T, D), got a 1-D batch of "
            "shape (5,)")):
        layer.forward(np.zeros(5, np.float32))
    layer.forward(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match=re.escape(
            "LayerNorm 'ln' expected 4 features on the last axis, got input of shape (2, 3, 5)")):
        layer.forward(np.zeros((2, 3, 5), np.float32))
    with pytest.raises(ValueError, match="eps must be positive, got 0.0"):
        layers.LayerNorm(eps=0)


# ---------------------------------------------------------------------- attention
def test_attention_is_causal():
    """Changing positions after i changes nothing at positions ≤ i, and dL/dx at a later
    position is exactly 0 for a loss on an earlier output."""
    rng = np.random.default_rng(0)
    layer = layers.CausalSelfAttention(2)
    x = rng.standard_normal((2, 6, 4))
    y = layer.forward(x, training=True)
    changed = x.copy()
    changed[:, 3:] += rng.standard_normal((2, 3, 4))
    np.testing.assert_array_equal(layer.forward(changed)[:, :3], y[:, :3])
    g = np.zeros_like(y)
    g[:, 2] = 1.0
    layer.forward(x, training=True)
    grad_x = layer.backward(g)
    assert np.all(grad_x[:, 3:] == 0.0) and np.all(grad_x[:, :3] != 0.0)


def test_attention_never_makes_a_cubic_array():
    """No (N, H, T, T, T) array: the softmax backward is a row sum, not a Jacobian per row. The
    whole step peaks far below the size of one such array."""
    import tracemalloc

    n, heads, t, e = 2, 2, 48, 8
    layer = layers.CausalSelfAttention(heads)
    x = np.random.default_rng(0).standard_normal((n, t, e))
    g = np.ones((n, t, e))
    layer.backward(layer.forward(x, training=True) * 0 + g)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        layer.forward(x, training=True)
        layer.backward(g)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    cubic = n * heads * t * t * t * 8
    assert peak < cubic / 8, f"attention step peaked at {peak} bytes (one N·H·T³ array: {cubic})"


def test_attention_errors():
    layer = layers.CausalSelfAttention(3, name="attn")
    with pytest.raises(ValueError, match=re.escape(
            "CausalSelfAttention 'attn': the embedding width E = 8 of input (2, 4, 8) is not "
            "divisible by heads = 3")):
        layer.forward(np.zeros((2, 4, 8), np.float32))
    with pytest.raises(ValueError, match=re.escape(
            "CausalSelfAttention 'attn' expected input of shape (N, T, E), got input of shape "
            "(2, 9)")):
        layer.forward(np.zeros((2, 9), np.float32))
    with pytest.raises(ValueError, match=r"dropout must lie in \[0, 1\), got 1.0"):
        layers.CausalSelfAttention(2, dropout=1.0)
    with pytest.raises(ValueError, match="heads must be a positive integer, got 0"):
        layers.CausalSelfAttention(0)


# ---------------------------------------------------------------------- positions and ids
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


@pytest.mark.parametrize("ids", [[[0, 1, 10]], [[-1, 0, 2]]], ids=["too_large", "negative"])
def test_embedding_ids_checked_inside_a_sequential(ids):
    """A Sequential calls its layers past their public forward; the id range is still checked
    (a negative id used to pick a row from the end of the table without a word)."""
    model = cr.Sequential([layers.Embedding(10, 4, input_shape=(3,)), layers.Flatten(),
                           layers.Dense(2)])
    with pytest.raises(ValueError, match=r"Embedding 'embedding_1' expected ids in \[0, 10\)"):
        model.predict(np.array(ids))


# ---------------------------------------------------------------------- Residual
def mlp_block():
    return layers.Residual([layers.LayerNorm(), layers.Dense(8, activation="gelu"),
                            layers.Dense(4)])


def test_residual_names_its_layers_and_parameters():
    block = mlp_block()
    assert [layer.name for layer in block.layers] == ["layernorm_1", "dense_1", "gelu_1",
                                                      "dense_2"]
    block.build((3, 4))
    assert [p.name for p in block.parameters()] == [
        "layernorm_1/gamma", "layernorm_1/beta", "dense_1/W", "dense_1/b", "dense_2/W",
        "dense_2/b"]
    assert block.count_params() == 4 + 4 + 4 * 8 + 8 + 8 * 4 + 4
    model = cr.Sequential([layers.Dense(4, input_shape=(3, 2)), mlp_block(), mlp_block()])
    names = [f"{layer.name}/{p.name}" for layer in model.layers for p in layer.parameters()]
    assert names[2:4] == ["residual_1/layernorm_1/gamma", "residual_1/layernorm_1/beta"]
    assert len(set(names)) == len(names)


def test_residual_gradient_is_the_sum_of_both_paths():
    rng = np.random.default_rng(0)
    dense = layers.Dense(3)
    block = layers.Residual(dense)
    x = rng.standard_normal((2, 5, 3))
    y = block.forward(x, training=True)
    np.testing.assert_array_equal(y, x + (x @ dense.W.value + dense.b.value))
    g = rng.standard_normal(y.shape)
    np.testing.assert_allclose(block.backward(g), g + g @ dense.W.value.T, rtol=1e-15)


def test_residual_layers_that_draw_share_its_generator():
    block = layers.Residual([layers.Dropout(0.5), layers.Dense(4), layers.Dropout(0.5),
                             layers.Residual([layers.Dense(4), layers.Dropout(0.5)])], seed=3)
    block.build((4,))
    draws = [block.layers[0], block.layers[2], block.layers[3], block.layers[3].layers[1]]
    assert all(layer.rng is block.rng for layer in draws)
    x = np.ones((6, 4), np.float32)
    first, second = block.forward(x, training=True), block.forward(x, training=True)
    assert not np.array_equal(first, second)
    assert layers.Residual(layers.Dense(3)).rng is None
    again = layers.Residual.from_config(block.get_config())
    again.build((4,))
    for mine, theirs in zip(again.parameters(), block.parameters(), strict=True):
        mine.value[...] = theirs.value
    again.rng.bit_generator.state = np.random.default_rng(3).bit_generator.state
    block.rng = np.random.default_rng(3)
    np.testing.assert_array_equal(again.forward(x, training=True), block.forward(x, training=True))


def test_residual_gradcheck_with_dropout_inside_a_model():
    model = cr.Sequential([
        layers.Dense(4, input_shape=(3, 2)),
        layers.Residual([layers.LayerNorm(), layers.Dense(6), layers.GELU(),
                         layers.Dropout(0.3), layers.Dense(4)]),
        layers.Flatten(), layers.Dense(3)], dtype="float64", seed=0)
    model.compile("adam", cr.losses.SparseCategoricalCrossEntropy(from_logits=True))
    rng = np.random.default_rng(0)
    report = cr.gradcheck(model, rng.standard_normal((5, 3, 2)), rng.integers(0, 3, 5),
                          max_entries=30)
    assert report.ok and report.max_rel_error < 1e-6, str(report)
    assert "residual_1/dense_1/W" in [e.name for e in report.entries]


def residual_model(seed=0):
    return cr.Sequential([
        layers.Dense(6, input_shape=(5,)),
        layers.Residual([layers.Dense(6), layers.BatchNorm(), layers.ReLU(),
                         layers.Dropout(0.2)]),
        layers.Residual(layers.Residual([layers.LayerNorm(), layers.Dense(6)])),
        layers.Dense(3)], seed=seed)


def test_model_with_residual_saves_loads_and_resumes_exactly(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 5)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    model = residual_model()
    model.compile(cr.optimizers.AdamW(0.01), cr.losses.SparseCategoricalCrossEntropy(
        from_logits=True))
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    path = tmp_path / "residual.npz"
    model.save(path)
    loaded = cr.load_model(path)
    assert loaded.get_config() == model.get_config()
    assert [f"{layer.name}/{p.name}" for layer in loaded.layers for p in layer.parameters()] == \
        [f"{layer.name}/{p.name}" for layer in model.layers for p in layer.parameters()]
    buffers = loaded.layers[1].buffers()
    assert sorted(buffers) == ["batchnorm_1/running_mean", "batchnorm_1/running_var"]
    np.testing.assert_array_equal(buffers["batchnorm_1/running_mean"],
                                  model.layers[1].layers[1].running_mean)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    # Same optimizer state and dropout stream: training goes on identically.
    resumed = loaded.fit(x, y, epochs=4, initial_epoch=2, batch_size=8, verbose=0)
    straight = model.fit(x, y, epochs=4, initial_epoch=2, batch_size=8, verbose=0)
    assert resumed.history["loss"] == straight.history["loss"]
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    copy = model.copy()
    np.testing.assert_array_equal(copy.forward(x, training=True), model.forward(x, training=True))


class Scale(Layer):
    """y = 2x: a user's layer class, defined outside chainrule."""

    def _forward(self, x, training):
        return 2.0 * x

    def _backward(self, grad_y, need_input_grad):
        return 2.0 * grad_y


def test_residual_with_a_user_layer_needs_custom_objects(tmp_path):
    model = cr.Sequential([layers.Dense(3, input_shape=(2,)),
                           layers.Residual([Scale(), layers.Dense(3)])], seed=0)
    path = tmp_path / "custom.npz"
    model.save(path)
    with pytest.raises(ValueError, match=r"layer class 'Scale' was saved from module .*pass "
                                         r"custom_objects=\{'Scale': Scale\}"):
        cr.load_model(path)
    loaded = cr.load_model(path, custom_objects={"Scale": Scale})
    x = np.ones((2, 2), np.float32)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_residual_errors():
    with pytest.raises(ValueError, match=re.escape(
            "Residual 'res': the block maps samples of shape (4, 6) to (4, 3); y = x + block(x) "
            "needs the same shape (end the block with a layer that maps back to 6 features)")):
        layers.Residual(layers.Dense(3), name="res").build((4, 6))
    with pytest.raises(TypeError, match="Residual expects a Layer or a list of Layers as its "
                                        "block, got str"):
        layers.Residual("dense")
    model = cr.Sequential([layers.Dense(2, input_shape=(2,))])
    with pytest.raises(TypeError, match=r"for a Sequential pass its layers, "
                                        r"Residual\(model.layers\)"):
        layers.Residual(model)
    with pytest.raises(ValueError, match="the block is empty"):
        layers.Residual([])
    with pytest.raises(ValueError, match="a layer named 'd' is already in the block"):
        layers.Residual([layers.Dense(2, name="d"), layers.Dense(2, name="d")])
    dense = layers.Dense(2)
    with pytest.raises(ValueError, match="appears twice in the block"):
        layers.Residual([dense, dense])
    # Built, it refuses another width before any inner layer runs (the first one here, a
    # Dropout, would take anything).
    built = layers.Residual([layers.Dropout(0.1), layers.Dense(4)], name="res")
    built.forward(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match=re.escape(
            "Residual 'res' was built for samples of shape (3, 4) (its block maps them to "
            "themselves), got input of shape (2, 3, 5)")):
        built.forward(np.zeros((2, 3, 5), np.float32))


# ---------------------------------------------------------------------- the sequence loss
SCCE = cr.losses.SparseCategoricalCrossEntropy


def logits_and_labels(steps, classes, ignore=None, share=0.3):
    """Logits (N, T, C) and labels (N, T); with ``ignore`` set, about ``share`` of the labels
    are that value (never all of them)."""
    def make(rng, n, dtype):
        z = (2.0 * rng.standard_normal((n, steps, classes))).astype(dtype)
        labels = rng.integers(0, classes, (n, steps))
        if ignore is not None:
            labels[rng.random((n, steps)) < share] = ignore
            labels[0, 0] = 1 if ignore == 0 else 0
        return z, labels
    return make


def probabilities_and_labels(steps, classes, ignore):
    def make(rng, n, dtype):
        z, labels = logits_and_labels(steps, classes, ignore)(rng, n, np.float64)
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return (e / e.sum(axis=-1, keepdims=True)).astype(dtype), labels
    return make


def torch_ce(loss, pred, labels):
    ignore = -100 if loss.ignore_index is None else loss.ignore_index
    logp = pred if loss.from_logits else None
    if loss.from_logits:
        logp = torch.log_softmax(pred, dim=-1)
    else:
        logp = torch.log(pred.clamp_min(loss.eps))
    return TF.nll_loss(logp.reshape(-1, pred.shape[-1]), labels.reshape(-1),
                       ignore_index=ignore, reduction=loss.reduction)


@dataclass(frozen=True)
class SeqLossCase:
    id: str
    factory: Callable[[], cr.losses.Loss]
    make_data: Callable
    torch_ref: Callable = torch_ce


SEQ_LOSS_CASES = [
    SeqLossCase("seq_logits", lambda: SCCE(from_logits=True), logits_and_labels(5, 4)),
    SeqLossCase("seq_logits_T1", lambda: SCCE(from_logits=True), logits_and_labels(1, 3)),
    SeqLossCase("seq_ignore_-100", lambda: SCCE(from_logits=True, ignore_index=-100),
                logits_and_labels(6, 5, ignore=-100)),
    SeqLossCase("seq_ignore_pad_id_0", lambda: SCCE(from_logits=True, ignore_index=0),
                logits_and_labels(6, 5, ignore=0)),
    SeqLossCase("seq_ignore_sum", lambda: SCCE(from_logits=True, reduction="sum",
                                               ignore_index=-100),
                logits_and_labels(4, 3, ignore=-100)),
    SeqLossCase("seq_probabilities_ignore", lambda: SCCE(ignore_index=-1),
                probabilities_and_labels(5, 4, ignore=-1)),
    SeqLossCase("rows_ignore_-100", lambda: SCCE(from_logits=True, ignore_index=-100),
                lambda rng, n, dtype: tuple(a[:, 0] for a in logits_and_labels(
                    1, 4, ignore=-100)(rng, n + 2, dtype))),
]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SEQ_LOSS_CASES, ids=lambda c: c.id)
def test_sequence_loss_matches_torch(case, dtype, seed):
    rng = np.random.default_rng(seed)
    pred, labels = case.make_data(rng, batch_size(rng, seed), dtype)
    loss = case.factory()
    value = loss(pred, labels)
    grad = loss.backward()
    assert grad.dtype == dtype and grad.shape == pred.shape
    pred_t = to_torch(pred, requires_grad=True)
    value_t = case.torch_ref(loss, pred_t, to_torch(labels))
    value_t.backward()
    rtol = rtol_for(dtype)
    assert_close(np.float64(value), value_t.item(), rtol, f"{case.id} value")
    assert_close_to_scale(grad, pred_t.grad, rtol, f"{case.id} gradient")
    if loss.ignore_index is not None:
        assert np.all(grad[labels == loss.ignore_index] == 0.0)


@pytest.mark.parametrize("case", SEQ_LOSS_CASES, ids=lambda c: c.id)
def test_sequence_loss_gradcheck(case):
    rng = np.random.default_rng(1)
    pred, labels = case.make_data(rng, 3, np.float64)
    report = cr.gradcheck(case.factory(), pred, labels)
    assert report.ok and report.max_rel_error < 1e-6, str(report)


def old_sparse_ce(pred, labels, from_logits, reduction, eps=1e-7):
    """The 2-D SparseCategoricalCrossEntropy before ignore_index, verbatim: the new code must
    give exactly these bits."""
    n = pred.shape[0]
    rows = np.arange(n)
    scale = 1.0 / n if reduction == "mean" else 1.0
    if from_logits:
        shifted = pred - np.max(pred, axis=-1, keepdims=True)
        e = np.exp(shifted)
        sum_e = np.sum(e, axis=-1)
        value = -scale * float(np.sum(shifted[rows, labels] - np.log(sum_e)))
        grad = e / sum_e[:, None]
        grad[rows, labels] -= 1.0
        grad *= scale
        return value, grad
    p_true = np.maximum(pred[rows, labels], eps)
    value = -scale * float(np.sum(np.log(p_true)))
    grad = np.zeros_like(pred)
    grad[rows, labels] = -scale / p_true * (pred[rows, labels] >= eps)
    return value, grad


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("ignore_index", [None, -100])
def test_two_dimensional_loss_is_bit_identical(dtype, from_logits, reduction, ignore_index):
    rng = np.random.default_rng(0)
    z = rng.standard_normal((7, 5)).astype(dtype)
    pred = z if from_logits else (np.exp(z) / np.exp(z).sum(-1, keepdims=True)).astype(dtype)
    labels = rng.integers(0, 5, 7)
    loss = SCCE(from_logits=from_logits, reduction=reduction, ignore_index=ignore_index)
    value, grad = loss(pred, labels), loss.backward()
    old_value, old_grad = old_sparse_ce(pred, labels, from_logits, reduction)
    assert value == old_value
    assert grad.dtype == old_grad.dtype
    np.testing.assert_array_equal(grad, old_grad)


def test_sequence_loss_errors_and_config():
    z = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match=re.escape(
            "SparseCategoricalCrossEntropy: labels must lie in [0, 4) (or ignore_index=-100) "
            "for 4 output classes; found 7 at index (1, 2)")):
        SCCE(ignore_index=-100)(z, np.array([[0, 1, -100], [2, 3, 7]]))
    with pytest.raises(ValueError, match=r"found -100 at index \(0, 2\)"):
        SCCE()(z, np.array([[0, 1, -100], [2, 3, 1]]))
    with pytest.raises(ValueError, match="every label equals ignore_index=-100, so no position is "
                                         "left to average over"):
        SCCE(from_logits=True, ignore_index=-100)(z, np.full((2, 3), -100))
    with pytest.raises(ValueError, match=re.escape("expected labels of shape (2, 3), got (2,)")):
        SCCE()(z, np.array([0, 1]))
    with pytest.raises(TypeError, match="ignore_index must be an integer label value or None"):
        SCCE(ignore_index=0.5)
    loss = SCCE(from_logits=True, ignore_index=-100)
    assert loss.get_config()["ignore_index"] == -100
    again = cr.losses.from_config("SparseCategoricalCrossEntropy", loss.get_config())
    assert again.ignore_index == -100 and again.from_logits
