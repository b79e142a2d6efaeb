"""Torch references for the table of tests/cases.py: each computes the same forward as one of
our layers or losses, from the same inputs and our weights (copied into torch's own modules,
or used as leaves in our layout, with the layout converted where torch's differs).

- A layer's reference, ``ref(layer) -> TorchRef``, is made from our built layer *before* its
  training forward, so it copies the forward-time weights and running statistics; its
  ``forward`` runs after ours and may read our layer's cache to replay the same random draw
  (Dropout's mask, RandomShift's offsets, attention dropout's mask).
- A loss's reference, ``ref(loss, pred_t, target_t) -> scalar tensor``, gets the probability
  paths' clipping exactly as ours does.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as TF
from torch import nn

from chainrule import layers
from chainrule.losses import Loss
from helpers import TORCH_DTYPE, to_torch


@dataclass
class TorchRef:
    """torch's forward (x tensor → y tensor) and, after its backward, torch's gradient of each of
    our parameters by our parameter's name, in our layout; ``buffers`` gives torch's running
    statistics by our buffer names after its forward (compared with an absolute floor of
    ``buffer_atol[name]`` rtols, for statistics that can be near 0)."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    grads: Callable[[], dict[str, torch.Tensor]] = dict
    buffers: Callable[[], dict[str, torch.Tensor]] = dict
    buffer_atol: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------- layers
def leaves(layer) -> dict[str, torch.Tensor]:
    """Our parameters as torch leaves requiring grad, by name, in our layout."""
    return {p.name: to_torch(p.value, requires_grad=True) for p in layer.parameters()}


def grads_of(tensors: dict[str, torch.Tensor]):
    return lambda: {name: t.grad for name, t in tensors.items()}


def _copy(param: torch.Tensor, value: np.ndarray) -> None:
    with torch.no_grad():
        param.copy_(to_torch(np.ascontiguousarray(value)))


def elementwise(fn):
    """A reference for a layer without parameters: y = fn(layer, x)."""
    return lambda layer: TorchRef(lambda x: fn(layer, x))


torch_identity = elementwise(lambda layer, x: x.clone())
torch_relu = elementwise(lambda layer, x: torch.relu(x))
torch_leaky_relu = elementwise(lambda layer, x: TF.leaky_relu(x, layer.alpha))
torch_sigmoid = elementwise(lambda layer, x: torch.sigmoid(x))
torch_tanh = elementwise(lambda layer, x: torch.tanh(x))
torch_softmax = elementwise(lambda layer, x: torch.softmax(x, -1))
torch_gelu = elementwise(lambda layer, x: TF.gelu(x, approximate=layer.approximate))
torch_flatten = elementwise(lambda layer, x: x.flatten(1))
# Dropout is random: apply *our* mask, so the comparison checks y = x ⊙ m and dL/dx = g ⊙ m.
torch_dropout = elementwise(lambda layer, x: x * to_torch(layer.cache))


def torch_dense(layer) -> TorchRef:
    """y = x W + b: F.linear with torch's weight = our Wᵀ (ours is (D, M), torch's (M, D))."""
    t = leaves(layer)
    bias = t[layer.b.name] if layer.b is not None else None
    return TorchRef(lambda x: TF.linear(x, t[layer.W.name].T, bias), grads_of(t))


def torch_embedding(layer) -> TorchRef:
    t = leaves(layer)
    return TorchRef(lambda ids: TF.embedding(ids, t[layer.W.name]), grads_of(t))


def torch_positional(layer) -> TorchRef:
    t = leaves(layer)
    return TorchRef(lambda x: x + t[layer.W.name][:x.shape[1]], grads_of(t))


def keras_same_pads(size: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """Keras/TensorFlow's "same" padding of one axis, written here apart from the layers'."""
    total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def torch_conv(layer) -> TorchRef:
    """torch's conv2d with the layer's settings; a rank-3 x is one channel, as in ours.

    torch's own padding='same' serves stride 1; torch refuses it with a stride, so there the
    input is first padded explicitly (and asymmetrically) with F.pad by Keras's rule.
    """
    t = leaves(layer)

    def forward(x):
        if x.ndim == 3:
            x = x.unsqueeze(1)
        bias = t["b"] if layer.use_bias else None
        padding = layer.padding
        if padding == "same" and layer.strides != (1, 1):
            (top, bottom), (left, right) = (
                keras_same_pads(n, k, s, d) for n, k, s, d in zip(
                    x.shape[2:], layer.kernel_size, layer.strides, layer.dilation, strict=True))
            x = TF.pad(x, (left, right, top, bottom))
            padding = 0
        with warnings.catch_warnings():
            # torch notes that 'same' with an even kernel pads a copy of the input: expected.
            warnings.filterwarnings("ignore", "Using padding='same' with even kernel", UserWarning)
            return TF.conv2d(x, t["W"], bias, stride=layer.strides, padding=padding,
                             dilation=layer.dilation)

    return TorchRef(forward, grads_of(t))


def torch_pool(layer) -> TorchRef:
    """max_pool2d / avg_pool2d (count_include_pad=True). "same" padding is computed here from
    Keras's rule, independently of the layer, and applied with F.pad (−∞ for max, 0 for
    average); int padding uses torch's own."""
    is_max = isinstance(layer, layers.MaxPool2D)

    def forward(x):
        x4 = x[:, None] if x.dim() == 3 else x
        k, s, padding = layer.pool_size, layer.strides, layer.padding
        if padding == "same":
            top, bottom = keras_same_pads(x4.shape[2], k[0], s[0])
            left, right = keras_same_pads(x4.shape[3], k[1], s[1])
            x4 = TF.pad(x4, (left, right, top, bottom), value=-math.inf if is_max else 0.0)
            padding = (0, 0)
        elif padding == "valid":
            padding = (0, 0)
        if is_max:
            y = TF.max_pool2d(x4, k, s, padding)
        else:
            y = TF.avg_pool2d(x4, k, s, padding, count_include_pad=True)
        return y[:, 0] if x.dim() == 3 else y

    return TorchRef(forward)


torch_global_average = elementwise(lambda layer, x: TF.adaptive_avg_pool2d(x, 1).flatten(1))


def torch_batch_norm(training: bool):
    """F.batch_norm from copies of our γ, β and running statistics taken before our forward;
    torch updates its copies in training (unbiased running variance) as ours does."""
    def ref(layer) -> TorchRef:
        t = leaves(layer)
        mean_t, var_t = to_torch(layer.running_mean), to_torch(layer.running_var)

        def forward(x):
            return TF.batch_norm(x, mean_t, var_t, t[layer.gamma.name], t[layer.beta.name],
                                 training=training, momentum=layer.momentum, eps=layer.eps)

        return TorchRef(forward, grads_of(t),
                        lambda: {"running_mean": mean_t, "running_var": var_t},
                        buffer_atol={"running_mean": 1.0})
    return ref


def torch_layernorm(layer) -> TorchRef:
    m = nn.LayerNorm(layer.gamma.shape[0], eps=layer.eps).to(TORCH_DTYPE[layer.dtype])
    _copy(m.weight, layer.gamma.value)
    _copy(m.bias, layer.beta.value)
    return TorchRef(m, lambda: {layer.gamma.name: m.weight.grad, layer.beta.name: m.bias.grad})


def torch_random_shift(layer) -> TorchRef:
    """Each sample padded by max_shift with zeros and cropped at our offsets (from our cache):
    y[n, …, i, j] = x[n, …, i − δᵢ, j − δⱼ]."""
    s = layer.max_shift

    def forward(x):
        if layer.cache is None:  # max_shift = 0: nothing drawn, y = x
            return x.clone()
        h, w = x.shape[-2:]
        padded = TF.pad(x, (s, s, s, s))
        return torch.stack([padded[n, ..., s - int(di):s - int(di) + h, s - int(dj):s - int(dj) + w]
                            for n, (di, dj) in enumerate(layer.cache)])

    return TorchRef(forward)


def torch_recurrent(layer) -> TorchRef:
    """nn.RNN / nn.LSTM / nn.GRU (batch_first) with weight_ih_l0 = W_ihᵀ, weight_hh_l0 = W_hhᵀ
    (torch's gate order, which ours follows), a learned h0 (c0) expanded over the batch."""
    module = {layers.RNN: nn.RNN, layers.LSTM: nn.LSTM, layers.GRU: nn.GRU}[type(layer)]
    d, h = layer.W_ih.shape[0], layer.units
    m = module(d, h, batch_first=True).to(TORCH_DTYPE[layer.dtype])
    _copy(m.weight_ih_l0, layer.W_ih.value.T)
    _copy(m.weight_hh_l0, layer.W_hh.value.T)
    _copy(m.bias_ih_l0, layer.b_ih.value)
    _copy(m.bias_hh_l0, layer.b_hh.value)
    learned = {"h0": layer.h0, "c0": layer.c0}
    states = {k: (p, to_torch(p.value, requires_grad=True)) for k, p in learned.items()
              if p is not None}

    def forward(x):
        init = None
        if states:
            full = [states[k][1].expand(x.shape[0], h)[None] for k in ("h0", "c0") if k in states]
            init = tuple(full) if len(full) == 2 else full[0]
        out, _ = m(x, init)
        return out if layer.return_sequences else out[:, -1]

    def grads():
        found = {layer.W_ih.name: m.weight_ih_l0.grad.T, layer.W_hh.name: m.weight_hh_l0.grad.T,
                 layer.b_ih.name: m.bias_ih_l0.grad, layer.b_hh.name: m.bias_hh_l0.grad}
        found.update({p.name: t.grad for p, t in states.values()})
        return found

    return TorchRef(forward, grads)


def torch_attention(layer) -> TorchRef:
    """GPT-2's attention in torch: c_attn = nn.Linear(E, 3E), heads split, causal SDPA, c_proj.

    Without dropout the reference is F.scaled_dot_product_attention(is_causal=True); with our
    dropout mask (from the layer's training cache) it is the masked reference written out:
    softmax(Q Kᵀ/√d with −∞ above the diagonal) ⊙ mask, times V.
    """
    e, heads = layer.W_out.shape[0], layer.heads
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

    return TorchRef(forward, lambda: {
        layer.W_qkv.name: c_attn.weight.grad.T, layer.b_qkv.name: c_attn.bias.grad,
        layer.W_out.name: c_proj.weight.grad.T, layer.b_out.name: c_proj.bias.grad})


def torch_residual(layer) -> TorchRef:
    """x + the block, each inner layer through its own reference (our parameter names inside a
    Residual are already <layer>.<name>)."""
    refs = [TORCH_REFS[type(inner)](inner) for inner in layer.layers]

    def forward(x):
        out = x
        for ref in refs:
            out = ref.forward(out)
        return x + out

    return TorchRef(forward, lambda: {k: g for ref in refs for k, g in ref.grads().items()})


#: The reference of each layer class, for the layers inside a Residual.
TORCH_REFS = {
    layers.Dense: torch_dense,
    layers.Identity: torch_identity,
    layers.ReLU: torch_relu,
    layers.LeakyReLU: torch_leaky_relu,
    layers.Sigmoid: torch_sigmoid,
    layers.Tanh: torch_tanh,
    layers.Softmax: torch_softmax,
    layers.GELU: torch_gelu,
    layers.Dropout: torch_dropout,
    layers.PositionalEmbedding: torch_positional,
    layers.LayerNorm: torch_layernorm,
    layers.RNN: torch_recurrent,
    layers.LSTM: torch_recurrent,
    layers.GRU: torch_recurrent,
    layers.CausalSelfAttention: torch_attention,
    layers.Residual: torch_residual,
}


# ---------------------------------------------------------------------- losses
# Each takes (our loss, pred, target) as tensors and returns torch's scalar loss. For the
# probability paths torch gets the same clipped formula as ours.
def _reduce(per_sample: torch.Tensor, loss: Loss) -> torch.Tensor:
    return per_sample.mean() if loss.reduction == "mean" else per_sample.sum()


def torch_mse(loss, p, t):
    scale = 0.5 if loss.half else 1.0
    return scale * TF.mse_loss(p, t, reduction=loss.reduction)


def torch_bce_probs(loss, p, t):
    pc = torch.clamp(p, loss.eps, 1 - loss.eps)
    return _reduce(-(t * torch.log(pc) + (1 - t) * torch.log(1 - pc)), loss)


def torch_bce_logits(loss, z, t):
    return TF.binary_cross_entropy_with_logits(z, t, reduction=loss.reduction)


def torch_cce_probs(loss, p, t):
    return _reduce(-(t * torch.log(torch.clamp(p, min=loss.eps))).sum(1), loss)


def torch_cross_entropy(loss, z, target):
    # Integer targets for the sparse loss, probability targets for the categorical one.
    return TF.cross_entropy(z, target, reduction=loss.reduction)


def torch_scce_probs(loss, p, y):
    p_true = p.gather(1, y[:, None]).squeeze(1)
    return _reduce(-torch.log(torch.clamp(p_true, min=loss.eps)), loss)


def torch_nll(loss, pred, labels):
    """(N, …, C) as rows of C classes through nll_loss, with torch's ignore_index."""
    ignore = -100 if loss.ignore_index is None else loss.ignore_index
    if loss.from_logits:
        logp = torch.log_softmax(pred, dim=-1)
    else:
        logp = torch.log(pred.clamp_min(loss.eps))
    return TF.nll_loss(logp.reshape(-1, pred.shape[-1]), labels.reshape(-1),
                       ignore_index=ignore, reduction=loss.reduction)
