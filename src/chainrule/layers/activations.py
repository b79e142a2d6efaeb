"""Element-wise activations and Softmax; each caches only what its derivative needs."""

from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from ..registry import Registry
from ..special import erf
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


class _CachesOutput(Layer):
    """An activation whose derivative is written in its output y = f(z) (σ′ = y(1 − y),
    tanh′ = 1 − y², the softmax Jacobian diag(s) − s sᵀ): the forward caches y, the backward
    reads it."""

    def _function(self, x):
        raise NotImplementedError

    def _backward_from_output(self, grad_y, y):
        raise NotImplementedError

    def _forward(self, x, training):
        y = self._function(x)
        if training:
            self.cache = y
        return y

    def _backward(self, grad_y, need_input_grad):
        if not need_input_grad:
            return None
        return self._backward_from_output(grad_y, self.cache)


class Sigmoid(_CachesOutput):
    """y = σ(z) = 1 / (1 + e^(−z)), computed without overflow for |z| up to 1e4.

    Backward: dσ/dz = σ(z)(1 − σ(z)), so dL/dz = g · y · (1 − y). Cache: the output y.
    """

    def _function(self, x):
        return F.sigmoid(x)

    def _backward_from_output(self, grad_y, y):
        return grad_y * (y * (1.0 - y))


class Tanh(_CachesOutput):
    """y = tanh(z).  Backward: dL/dz = g · (1 − y²). Cache: the output y."""

    def _function(self, x):
        return np.tanh(x)

    def _backward_from_output(self, grad_y, y):
        return grad_y * (1.0 - y * y)


class Softmax(_CachesOutput):
    """Softmax over the last axis: s_i = exp(z_i − m) / Σ_j exp(z_j − m), m = max_j z_j.

    Backward: the softmax Jacobian is ∂s_i/∂z_j = s_i (δ_ij − s_j) = diag(s) − s sᵀ. Applied to
    the upstream gradient g without ever forming it:

        dL/dz_j = Σ_i g_i s_i (δ_ij − s_j) = s_j (g_j − Σ_i g_i s_i),   i.e.  s ⊙ (g − ⟨g, s⟩)

    one row-wise dot product per sample, no (N, C, C) array. Cache: the output s.
    """

    def _function(self, x):
        return F.softmax(x, axis=-1)

    def _backward_from_output(self, grad_y, s):
        return s * (grad_y - np.sum(grad_y * s, axis=-1, keepdims=True))


#: GELU's constants as Python floats, so that float32 arithmetic stays float32.
_SQRT1_2 = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2_PI = math.sqrt(2.0 / math.pi)
_KAPPA = 0.044715


class GELU(Layer):
    """Gaussian error linear unit, y = x Φ(x), as ``torch.nn.functional.gelu``.

    Exact form (``approximate="none"``, the default), Φ the standard normal CDF:
        y = x Φ(x) = ½ x (1 + erf(x/√2))
        Backward:  dL/dx = g · (Φ(x) + x φ(x)),   φ(x) = e^(−x²/2) / √(2π)

    Tanh form (``approximate="tanh"``, GPT-2's), with u = √(2/π) (x + κ x³), κ = 0.044715:
        y = ½ x (1 + tanh u)
        Backward:  dL/dx = g · (½ (1 + tanh u) + ½ x (1 − tanh² u) √(2/π) (1 + 3κ x²))

    Derivation: the exact form is the product rule on x · Φ(x) with Φ′ = φ. The tanh form is the
    product rule on ½ x · (1 + tanh u): d/dx (1 + tanh u) = (1 − tanh² u) · du/dx and
    du/dx = √(2/π)(1 + 3κ x²). Both are written as PyTorch's GeluBackward writes them.

    erf is :func:`chainrule.special.erf`, fdlibm's rational approximations vectorized (below
    1 ulp in float64; no SciPy, no Python loop), evaluated in the input's dtype. The exact form
    is computed as torch computes it, ½ x (1 + erf(x/√2)): far in the negative tail (x < −5)
    1 + erf cancels, and y keeps an absolute accuracy of about eps·|x| rather than a relative
    one, in torch as here (likewise 1 + tanh u in the tanh form).

    Cache (training only): x and Φ(x) (exact form; φ(x) is one exp, recomputed in backward
    rather than stored), or x and tanh u (tanh form).

    Args:
        approximate: "none" (erf) or "tanh", as in PyTorch.

    Raises:
        ValueError: at construction, for another ``approximate``.
    """

    def __init__(self, approximate: str = "none", name=None, input_shape=None):
        super().__init__(name=name, input_shape=input_shape)
        if approximate not in ("none", "tanh"):
            raise ValueError(
                f"GELU: approximate must be 'none' (the exact erf form) or 'tanh', got "
                f"{approximate!r}"
            )
        self.approximate = approximate

    def _forward(self, x, training):
        if self.approximate == "tanh":
            t = np.tanh(_SQRT_2_PI * (x + _KAPPA * (x * x * x)))
            y = 0.5 * x * (1.0 + t)
        else:
            t = 0.5 * (1.0 + erf(x * _SQRT1_2))  # Φ(x)
            y = x * t
        if training:
            self.cache = (x, t)
        return y

    def _backward(self, grad_y, need_input_grad):
        if not need_input_grad:
            return None
        x, t = self.cache
        if self.approximate == "tanh":
            slope = 0.5 * (1.0 + t)
            slope += (0.5 * x) * (1.0 - t * t) * (_SQRT_2_PI * (1.0 + (3.0 * _KAPPA) * (x * x)))
        else:
            slope = t + x * (np.exp(-0.5 * (x * x)) * _INV_SQRT_2PI)
        return grad_y * slope

    def get_config(self):
        return {**super().get_config(), "approximate": self.approximate}


#: The element-wise activations: y = f(x) entry by entry, dL/dx = g ⊙ f′(x).
ELEMENTWISE = (Identity, ReLU, LeakyReLU, Sigmoid, Tanh, GELU)

ACTIVATIONS = Registry("activation", entries={
    "linear": Identity, "identity": Identity, "relu": ReLU, "leaky_relu": LeakyReLU,
    "sigmoid": Sigmoid, "tanh": Tanh, "softmax": Softmax, "gelu": GELU,
})


def get(name: str, what: str | None = None) -> type[Layer]:
    """Return the activation layer class for ``name`` ("relu", "sigmoid", …).

    Args:
        what: the argument that named it, for the message, e.g. ``"Dense: activation"``.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    return ACTIVATIONS.get(name, what)
