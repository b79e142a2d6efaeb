"""Compiled element-wise kernels (numba, optional) for the optimizers' hottest update.

The NumPy code in :mod:`chainrule.optimizers` defines every update. Adam's takes twelve
whole-array passes, each reading and writing the (P,) arrays of all parameters (about 0.3 ms
per step for the 269,322 values of the 784-256-256-10 MLP, as long as a quarter of that step's
matrix products). With numba installed (``pip install chainrule[fast]``), ``adam`` runs the same
formula in one loop over the elements instead, with the same float operations in the same
order, so that the result is the same bit for bit (tests compare the two). Without numba,
``adam`` returns False and the optimizer runs its NumPy passes.

numba is imported, and the loop compiled for the arrays' dtype, at the first Adam step, not
at ``import chainrule``; the compiled code is cached on disk for later processes.
"""

from __future__ import annotations

import numpy as np

#: Whether to use the compiled kernels when numba is importable (set False to force NumPy).
ENABLED = True

_adam_kernel = None  # the compiled loop; False once numba was found missing


def _adam_loop(value, grad, m, v, decay, one_minus_beta1, beta2, one_minus_beta2, eps_hat,
               step_size):
    # Element i of Optimizer._decayed_grad and Adam._update, operation by operation:
    #   g = λ p + g;   m ← m + (1 − β₁)(g − m);   v ← β₂ v + (1 − β₂) g²;
    #   p ← p − s · m / (√v + ε̂)
    for i in range(value.size):
        g = grad[i]
        if decay != 0:
            g = value[i] * decay + g
        m_i = m[i] + (g - m[i]) * one_minus_beta1
        v_i = v[i] * beta2 + (g * g) * one_minus_beta2
        m[i] = m_i
        v[i] = v_i
        value[i] = value[i] - (m_i / (np.sqrt(v_i) + eps_hat)) * step_size


def _compiled_adam():
    """The numba-compiled ``_adam_loop``, or None when numba is not installed."""
    global _adam_kernel
    if _adam_kernel is None:
        try:
            import numba
        except ImportError:
            _adam_kernel = False
            return None
        # error_model="numpy": a division by zero gives inf as in NumPy instead of a check
        # per element, which would keep LLVM from vectorising the loop.
        options = {"nogil": True, "error_model": "numpy"}
        try:
            _adam_kernel = numba.njit(cache=True, **options)(_adam_loop)
        except RuntimeError:  # no writable cache directory: compile in memory only
            _adam_kernel = numba.njit(**options)(_adam_loop)
    return _adam_kernel or None


def available() -> bool:
    """Whether the compiled kernels run: ``ENABLED`` and numba installed (imports numba)."""
    return ENABLED and _compiled_adam() is not None


def adam(value, grad, m, v, decay, beta1, beta2, eps_hat, step_size) -> bool:
    """One Adam step in place, in one compiled loop, if numba is there and the arrays allow.

        g = g + λ p;   m ← β₁ m + (1 − β₁) g;   v ← β₂ v + (1 − β₂) g²;
        p ← p − s · m / (√v + ε̂)

    with the optimizer's step size s = lr √c₂ / c₁ and ε̂ = ε √c₂ (cₖ = 1 − βₖᵗ). Each scalar is
    rounded to the arrays' dtype first, as NumPy does for a Python float.

    Args:
        value, grad, m, v: arrays of one shape and one floating dtype (float32 or float64),
            C-contiguous; ``value``, ``m`` and ``v`` are updated in place.
        decay: λ, the L2 term added to the gradient (0 for none).
        beta1, beta2, eps_hat, step_size: β₁, β₂, ε̂ and s as Python floats.

    Returns:
        True when the step ran here; False (nothing changed) without numba, with ``ENABLED``
        False, or for arrays it does not take: the caller then runs the NumPy passes.
    """
    if not ENABLED:
        return False
    dtype = value.dtype
    if dtype not in (np.float32, np.float64) or any(
            a.dtype != dtype or a.shape != value.shape or not a.flags.c_contiguous
            for a in (value, grad, m, v)):
        return False
    kernel = _compiled_adam()
    if kernel is None:
        return False
    f = dtype.type
    kernel(value.reshape(-1), grad.reshape(-1), m.reshape(-1), v.reshape(-1), f(decay),
           f(1.0 - beta1), f(beta2), f(1.0 - beta2), f(eps_hat), f(step_size))
    return True
