"""CausalSelfAttention: multi-head scaled dot-product self-attention with a causal mask (GPT-2)."""

from __future__ import annotations

import math

import numpy as np

from .. import initializers
from ..parameter import Parameter
from .arguments import is_int, received_shape
from .base import Layer, new_generator


class CausalSelfAttention(Layer):
    """Multi-head causal self-attention, GPT-2's ``attn`` block (c_attn, then c_proj).

    Shapes: x, y (N, T, E); H heads of width d = E / H; W_qkv (E, 3E), b_qkv (3E,), W_out (E, E),
    b_out (E,); Q, K, V, O (N, H, T, d); S, P (N, H, T, T).

    Forward:
        [Q | K | V] = x W_qkv + b_qkv                     three E-wide column blocks, each split
                                                          into H heads of width d
        S = Q Kᵀ / √d,   S_ij = −∞ for j > i              (position i sees positions ≤ i)
        P = softmax(S) over j,   P̃ = P ⊙ M                M the attention-dropout mask (M = 1
                                                          without dropout or at inference)
        O = P̃ V,  heads concatenated back to (N, T, E)
        y = O W_out + b_out

    Backward, with g = dL/dy (per head for the middle lines):
        dL/dW_out = Σ Oᵀ g,   dL/db_out = Σ g,   dO = g W_outᵀ
        dP̃ = dO Vᵀ,   dV = P̃ᵀ dO,   dP = dP̃ ⊙ M
        dS = P ⊙ (dP − rowsum(dP ⊙ P))                    the softmax JVP; 0 where masked
        dQ = dS K / √d,   dK = dSᵀ Q / √d
        dL/dW_qkv = Σ xᵀ [dQ | dK | dV],   dL/db_qkv = Σ [dQ | dK | dV]
        dL/dx = [dQ | dK | dV] W_qkvᵀ

    Derivation of the non-obvious steps:
    - Softmax over a row of S has the Jacobian ∂P_j/∂S_k = P_j (δ_jk − P_k), so
      dS_k = Σ_j dP_j P_j (δ_jk − P_k) = P_k (dP_k − Σ_j dP_j P_j): a product with a row sum,
      no (T, T) Jacobian per row and nothing of shape (N, H, T, T, T). Masked entries have
      P = 0 exactly (exp(−∞)), so their dS is 0 and no gradient leaks to future positions.
    - S = Q Kᵀ/√d is a matrix product per head: dQ = dS K/√d and dK = dSᵀ Q/√d (the gradient of
      A B with respect to A is G Bᵀ, with respect to B it is Aᵀ G).
    - O = P̃ V likewise gives dP̃ = dO Vᵀ and dV = P̃ᵀ dO.
    - Q, K and V are column blocks of one product x W_qkv, so their gradients, concatenated in
      the same block order, form the gradient of that product, and the rest is Dense's backward.

    The mask is applied by setting S_ij = −∞ above the diagonal before the max-shifted softmax;
    every row keeps its diagonal entry, so the row maximum is finite and no row is all −∞.

    Parameter layout: (in, out), as Dense, and GPT-2's own Conv1D: HF GPT-2's
    ``attn.c_attn.weight`` (E, 3E) is W_qkv and ``attn.c_proj.weight`` (E, E) is W_out as they
    are. From torch ``nn.Linear(E, 3E)`` (weight (3E, E)): W_qkv = weight.T; the Q, K, V blocks
    are the first, second and third E columns, heads in order within each block (as
    ``nn.MultiheadAttention``'s in_proj_weight, transposed).

    Cache (training only): x, Q, K, V (N, H, T, d), P (N, H, T, T), the dropout mask (when
    dropping) and the concatenated O (N, T, E). P is kept rather than recomputed from Q and K:
    backward needs it twice and recomputing it is a second (T × T) matmul and softmax per head.

    Args:
        heads: H; E must be divisible by H.
        dropout: probability of dropping an attention weight while training (0 by default, as
            GPT-2 fine-tuning and torch's ``dropout_p``); kept weights are scaled by 1/(1 − p).
        seed: seed of the layer's Generator for the dropout masks (derived from the model's seed
            by default), as Dropout.
        kernel_initializer: initializer of W_qkv and W_out ("glorot_uniform" by default).

    Raises:
        ValueError: at construction for heads < 1 or a dropout outside [0, 1); at build or
            forward for an input that is not (N, T, E), an E not divisible by H, or another E
            than the layer was built for.
    """

    def __init__(self, heads: int, dropout: float = 0.0, seed: int | None = None,
                 kernel_initializer: str = "glorot_uniform", name=None, input_shape=None):
        super().__init__(name=name, input_shape=input_shape)
        if not is_int(heads) or heads < 1:
            raise ValueError(f"CausalSelfAttention: heads must be a positive integer, got "
                             f"{heads!r}")
        dropout = float(dropout)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"CausalSelfAttention: dropout must lie in [0, 1), got {dropout}")
        initializers.get(kernel_initializer)
        self.heads = int(heads)
        self.dropout = dropout
        self.seed = seed
        self.kernel_initializer = kernel_initializer
        self.rng: np.random.Generator | None = None
        self.W_qkv: Parameter | None = None
        self.b_qkv: Parameter | None = None
        self.W_out: Parameter | None = None
        self.b_out: Parameter | None = None

    def check_sample_shape(self, shape, batch=None):
        received = received_shape(shape, batch)
        if len(shape) != 2:
            raise ValueError(
                f"{self.label} expected input of shape (N, T, E), got input of shape "
                f"{received}"
            )
        width = shape[-1]
        if width % self.heads:
            raise ValueError(
                f"{self.label}: the embedding width E = {width} of input {received} is not "
                f"divisible by heads = {self.heads}; choose a width that is a multiple of the "
                "number of heads"
            )
        if self.built:
            self.check_size(shape, -1, self.W_out.value.shape[0], "features on the last axis",
                            received)

    def _build(self, input_shape, rng):
        e = input_shape[-1]
        init = initializers.get(self.kernel_initializer)
        self.W_qkv = Parameter(init((e, 3 * e), rng, self.dtype), "W_qkv")
        self.b_qkv = Parameter(np.zeros(3 * e, dtype=self.dtype), "b_qkv")
        self.W_out = Parameter(init((e, e), rng, self.dtype), "W_out")
        self.b_out = Parameter(np.zeros(e, dtype=self.dtype), "b_out")
        self._params = [self.W_qkv, self.b_qkv, self.W_out, self.b_out]
        if self.dropout > 0.0:
            self.rng = new_generator(self.seed, rng)

    def _split(self, a: np.ndarray) -> np.ndarray:
        """(N, T, E) → (N, H, T, d): head h holds columns h·d … (h + 1)·d − 1."""
        n, t, e = a.shape
        return a.reshape(n, t, self.heads, e // self.heads).transpose(0, 2, 1, 3)

    @staticmethod
    def _merge(a: np.ndarray) -> np.ndarray:
        """(N, H, T, d) → (N, T, H·d), the heads side by side (a contiguous copy)."""
        n, h, t, d = a.shape
        return a.transpose(0, 2, 1, 3).reshape(n, t, h * d)

    def _forward(self, x, training):
        n, t, e = x.shape
        scale = 1.0 / math.sqrt(e // self.heads)
        qkv = x @ self.W_qkv.value
        qkv += self.b_qkv.value
        q = self._split(qkv[..., :e])
        k = self._split(qkv[..., e:2 * e])
        v = self._split(qkv[..., 2 * e:])
        s = (q @ k.transpose(0, 1, 3, 2)) * scale
        future = np.triu(np.ones((t, t), dtype=bool), k=1)
        s[..., future] = -np.inf
        s -= np.max(s, axis=-1, keepdims=True)
        p = np.exp(s, out=s)
        p /= np.sum(p, axis=-1, keepdims=True)
        mask = None
        if training and self.dropout > 0.0:
            keep = self.rng.random(p.shape, dtype=self.dtype) >= self.dropout
            mask = keep * self.dtype.type(1.0 / (1.0 - self.dropout))
        o = self._merge((p if mask is None else p * mask) @ v)
        y = o @ self.W_out.value
        y += self.b_out.value
        if training:
            self.cache = (x, q, k, v, p, mask, o)
        return y

    def _backward(self, grad_y, need_input_grad):
        x, q, k, v, p, mask, o = self.cache
        n, t, e = x.shape
        scale = 1.0 / math.sqrt(e // self.heads)
        g = grad_y.reshape(-1, e)
        self.W_out.grad = o.reshape(-1, e).T @ g
        self.b_out.grad = np.sum(g, axis=0)
        d_o = self._split(grad_y @ self.W_out.value.T)            # (N, H, T, d)
        p_used = p if mask is None else p * mask
        d_v = p_used.transpose(0, 1, 3, 2) @ d_o
        d_p = d_o @ v.transpose(0, 1, 3, 2)                       # (N, H, T, T)
        if mask is not None:
            d_p *= mask
        # Softmax JVP: dS = P ⊙ (dP − Σⱼ dPⱼ Pⱼ), one row sum per (n, h, i).
        d_s = d_p
        d_s -= np.einsum("nhij,nhij->nhi", d_p, p)[..., None]
        d_s *= p
        d_s *= scale
        d_q = d_s @ k
        d_k = d_s.transpose(0, 1, 3, 2) @ q
        d_qkv = np.concatenate([self._merge(d_q), self._merge(d_k), self._merge(d_v)], axis=-1)
        rows = d_qkv.reshape(-1, 3 * e)
        self.W_qkv.grad = x.reshape(-1, e).T @ rows
        self.b_qkv.grad = np.sum(rows, axis=0)
        if not need_input_grad:
            return None
        return d_qkv @ self.W_qkv.value.T

    def get_config(self):
        return {
            **super().get_config(),
            "heads": self.heads,
            "dropout": self.dropout,
            "seed": self.seed,
            "kernel_initializer": self.kernel_initializer,
        }
