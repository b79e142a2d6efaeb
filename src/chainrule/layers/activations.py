"""Element-wise activations and Softmax; each caches only what its derivative needs."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..validate import number
from .base import Layer


class Identity(Layer):
    """y = x;  dL/dx = dL/dy. The "linear" activation."""

    def _forward(self, x, training):
        return x

    def _backward(self, grad_y, need_input_grad):
        return grad_y if need_input_grad else None


class ReLU(Layer):
    """y = max(z, 0).

    Backward: dL/dz = g · [z > 0]. The derivative at the kink z = 0 is taken as 0, as in PyTorch.
    Cache: the boolean mask z > 0 (one byte per entry).
    """

    def _forward(self, x, training):
        mask = x > 0
        if training:
            self.cache = mask
        return x * mask

    def _backward(self, grad_y, need_input_grad):
        return grad_y * self.cache if need_input_grad else None


class LeakyReLU(Layer):
    """y = z for z > 0, α z otherwise.

    Backward: dL/dz = g for z > 0 and α g otherwise (α at z = 0, as in PyTorch).

    Args:
        alpha: the slope α for negative inputs (default 0.01).
    """

    def __init__(self, alpha: float = 0.01, name=None, input_shape=None):
        super().__init__(name=name, input_shape=input_shape)
        self.alpha = number(alpha, "alpha", "LeakyReLU")

    def _forward(self, x, training):
        mask = x > 0
        if training:
            self.cache = mask
        return np.where(mask, x, x * self.alpha)

    def _backward(self, grad_y, need_input_grad):
        if not need_input_grad:
            return None
        return np.where(self.cache, grad_y, grad_y * self.alpha)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}


class Sigmoid(Layer):
    """y = σ(z) = 1 / (1 + e^(−z)), computed without overflow for |z| up to 1e4.

    Backward: dσ/dz = σ(z)(1 − σ(z)), so dL/dz = g · y · (1 − y). Cache: the output y.
    """

    def _forward(self, x, training):
        y = F.sigmoid(x)
        if training:
            self.cache = y
        return y

    def _backward(self, grad_y, need_input_grad):
        if not need_input_grad:
            return None
        y = self.cache
        return grad_y * y * (1.0 - y)


class Tanh(Layer):
    """y = tanh(z).  Backward: dL/dz = g · (1 − y²). Cache: the output y."""

    def _forward(self, x, training):
        y = np.tanh(x)
        if training:
            self.cache = y
        return y

    def _backward(self, grad_y, need_input_grad):
        if not need_input_grad:
            return None
        y = self.cache
        return grad_y * (1.0 - y * y)


class Softmax(Layer):
    """Softmax over the last axis: s_i = exp(z_i − m) / Σ_j exp(z_j − m), m = max_j z_j.

    Backward: the softmax Jacobian is ∂s_i/∂z_j = s_i (δ_ij − s_j) = diag(s) − s sᵀ. Applied to
    the upstream gradient g without ever forming it:

        dL/dz_j = Σ_i g_i s_i (δ_ij − s_j) = s_j (g_j − Σ_i g_i s_i),   i.e.  s ⊙ (g − ⟨g, s⟩)

    one row-wise dot product per sample, no (N, C, C) array. Cache: the output s.
    """

    def _forward(self, x, training):
        s = F.softmax(x, axis=-1)
        if training:
            self.cache = s
        return s

    def _backward(self, grad_y, need_input_grad):
        if not need_input_grad:
            return None
        s = self.cache
        return s * (grad_y - np.sum(grad_y * s, axis=-1, keepdims=True))


ACTIVATIONS: dict[str, type[Layer]] = {
    "linear": Identity,
    "identity": Identity,
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "softmax": Softmax,
}


def get(name: str, what: str | None = None) -> type[Layer]:
    """Return the activation layer class for ``name`` ("relu", "sigmoid", …).

    Args:
        what: the argument that named it, for the message, e.g. ``"Dense: activation"``.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        where = f"{what}: " if what else ""
        raise ValueError(
            f"{where}unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}"
        ) from None
