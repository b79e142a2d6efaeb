"""Compiled loops (numba, optional) for the hottest element-wise work of a training step.

The NumPy code defines every computation: the optimizers' updates in
:mod:`chainrule.optimizers`, BatchNorm in :mod:`chainrule.layers.normalization`, max pooling in
:mod:`chainrule.layers.pooling`. With numba installed (``pip install chainrule[fast]``) the
functions here run the same formulas in one loop over the elements instead of several
whole-array passes, each reading and writing arrays of the batch's size:

- ``adam``: Adam's twelve passes over the (P,) parameter buffer (about 0.3 ms per step for the
  269,322 values of the 784-256-256-10 MLP), with the same float operations in the same order,
  so the result is the same bit for bit.
- ``flush_subnormals``: the optimizers' periodic flush of subnormal moments to 0, one pass over
  a state array instead of NumPy's absolute value, comparison and masked assignment (each
  with a temporary of the buffer's size); the same values.
- ``channel_moments``, ``channel_affine``, ``channel_grad_sums``, ``batchnorm_input_grad``:
  BatchNorm's training forward and backward on pixel rows (M, C), two passes each way instead
  of five. The element-wise formulas are NumPy's operation by operation; the per-channel sums
  are accumulated in float64 in row order (NumPy sums float32 in its own order), so μ, σ² and
  the gradient sums agree with the NumPy path to float32 rounding, not bit for bit.
- ``transpose``: a matrix's transpose copied in 16×16 tiles (the Fourier convolution moves
  the batch axis last and back, ``layers.fourier``), where NumPy's copy walks one of the two
  arrays a row apart per element; the same values.
- ``max_pool_tiles``, ``max_pool_tiles_backward``: max pooling over windows that tile the
  image, one pass each way, with the first maximum in row-major window order as the argmax
  (the NumPy path's rule): the same values bit for bit (for a window holding a NaN, y is NaN
  in both, and its gradient may go to another of its pixels).

Each returns None (or False) when numba is missing, ``ENABLED`` is False, or the arrays are not
of a kind it takes; the caller then runs its NumPy passes. The loops run on one thread with the
GIL released, so threads that train or serve several models at once run side by side.
numba is imported, and a loop compiled for the arrays' dtype, at its first call, not at
``import chainrule``; compiled code is cached on disk for later processes.
"""

from __future__ import annotations

import numpy as np

#: Whether to use the compiled kernels when numba is importable (set False to force NumPy).
ENABLED = True


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


_by_loop: dict = {}  # loop function → its compiled version; False without numba


def _compiled(loop):
    """The numba-compiled ``loop``, or None when numba is not installed or ``ENABLED`` is off."""
    if not ENABLED:
        return None
    kernel = _by_loop.get(loop)
    if kernel is None:
        try:
            import numba
        except ImportError:
            _by_loop[loop] = False
            return None
        # error_model="numpy": a division by zero gives inf as in NumPy instead of a check
        # per element, which would keep LLVM from vectorising the loop.
        options = {"nogil": True, "error_model": "numpy"}
        try:
            kernel = numba.njit(cache=True, **options)(loop)
        except RuntimeError:  # no writable cache directory: compile in memory only
            kernel = numba.njit(**options)(loop)
        _by_loop[loop] = kernel
    return kernel or None


def available() -> bool:
    """Whether the compiled kernels run: ``ENABLED`` and numba installed (imports numba)."""
    return _compiled(_adam_loop) is not None


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
    dtype = value.dtype
    if dtype not in (np.float32, np.float64) or any(
            a.dtype != dtype or a.shape != value.shape or not a.flags.c_contiguous
            for a in (value, grad, m, v)):
        return False
    kernel = _compiled(_adam_loop)
    if kernel is None:
        return False
    f = dtype.type
    kernel(value.reshape(-1), grad.reshape(-1), m.reshape(-1), v.reshape(-1), f(decay),
           f(1.0 - beta1), f(beta2), f(1.0 - beta2), f(eps_hat), f(step_size))
    return True


def _flush_loop(a, tiny):
    # a_i ← 0 where |a_i| < tiny (a NaN compares False and stays).
    for i in range(a.size):
        if abs(a[i]) < tiny:
            a[i] = 0.0


def flush_subnormals(a: np.ndarray) -> bool:
    """Set the entries of ``a`` whose magnitude is below ``finfo(a.dtype).tiny`` (the
    subnormals) to 0 in place, in one compiled pass.

    Returns:
        True when it ran; False (nothing changed) without numba, with ``ENABLED`` False, or for
        an array that is not a C-contiguous float32/float64 one.
    """
    if a.dtype not in (np.float32, np.float64) or not a.flags.c_contiguous:
        return False
    kernel = _compiled(_flush_loop)
    if kernel is None:
        return False
    kernel(a.reshape(-1), np.finfo(a.dtype).tiny)
    return True


# ---------------------------------------------------------------------- BatchNorm
def _moments_loop(x, mean, var):
    # μ_c = (1/M) Σᵢ x_ic, then σ²_c = (1/M) Σᵢ (x_ic − μ_c)² over rows i, summed in float64;
    # x − μ is rounded to x's dtype first, as the NumPy path's centred values are.
    m, c = x.shape
    total = np.zeros(c)
    for i in range(m):
        for j in range(c):
            total[j] += x[i, j]
    for j in range(c):
        mean[j] = total[j] / m
    total[:] = 0.0
    for i in range(m):
        for j in range(c):
            d = x[i, j] - mean[j]
            total[j] += d * d
    for j in range(c):
        var[j] = total[j] / m


def _affine_loop(x, mean, scale, shift, out):
    # y = (x − μ)·a + b, each operation rounded to the dtype as NumPy's passes are.
    m, c = x.shape
    for i in range(m):
        for j in range(c):
            out[i, j] = (x[i, j] - mean[j]) * scale[j] + shift[j]


def _grad_sums_loop(g, x, mean, sum_g, sum_g_centred):
    # Σᵢ g_ic and Σᵢ g_ic (x_ic − μ_c), summed in float64.
    m, c = x.shape
    total_g = np.zeros(c)
    total_gc = np.zeros(c)
    for i in range(m):
        for j in range(c):
            total_g[j] += g[i, j]
            total_gc[j] += g[i, j] * (x[i, j] - mean[j])
    for j in range(c):
        sum_g[j] = total_g[j]
        sum_g_centred[j] = total_gc[j]


def _input_grad_loop(g, x, mean, a, b, cx, out):
    # dL/dx = g·a − b − (x − μ)·c per channel, in the NumPy path's order of operations.
    m, c = x.shape
    for i in range(m):
        for j in range(c):
            out[i, j] = (g[i, j] * a[j] - b[j]) - (x[i, j] - mean[j]) * cx[j]


def _rows_kernel(loop, *arrays):
    """The compiled ``loop`` if every array is a C-contiguous float32 or float64 array of the
    first one's dtype, else None."""
    dtype = arrays[0].dtype
    if dtype not in (np.float32, np.float64) or any(
            a.dtype != dtype or not a.flags.c_contiguous for a in arrays):
        return None
    return _compiled(loop)


def channel_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-channel mean μ and biased variance σ² (C,) of pixel rows x (M, C), in x's dtype.

        μ_c = (1/M) Σᵢ x_ic,   σ²_c = (1/M) Σᵢ (x_ic − μ_c)²

    Returns None when the compiled loop does not run (see the module docstring).
    """
    kernel = _rows_kernel(_moments_loop, x)
    if kernel is None:
        return None
    mean, var = np.empty(x.shape[1], x.dtype), np.empty(x.shape[1], x.dtype)
    kernel(x, mean, var)
    return mean, var


def channel_affine(x, mean, scale, shift) -> np.ndarray | None:
    """y = (x − μ)·a + b (M, C) for pixel rows x (M, C) and per-channel μ, a, b (C,), or None."""
    kernel = _rows_kernel(_affine_loop, x, mean, scale, shift)
    if kernel is None:
        return None
    out = np.empty_like(x)
    kernel(x, mean, scale, shift, out)
    return out


def channel_grad_sums(g, x, mean) -> tuple[np.ndarray, np.ndarray] | None:
    """(Σᵢ g_ic, Σᵢ g_ic (x_ic − μ_c)) per channel (C,), for g and x (M, C), or None."""
    kernel = _rows_kernel(_grad_sums_loop, g, x, mean)
    if kernel is None:
        return None
    sum_g, sum_g_centred = np.empty(x.shape[1], x.dtype), np.empty(x.shape[1], x.dtype)
    kernel(g, x, mean, sum_g, sum_g_centred)
    return sum_g, sum_g_centred


def batchnorm_input_grad(g, x, mean, a, b, c) -> np.ndarray | None:
    """dL/dx = g·a − b − (x − μ)·c (M, C) for g, x (M, C) and per-channel μ, a, b, c, or None."""
    kernel = _rows_kernel(_input_grad_loop, g, x, mean, a, b, c)
    if kernel is None:
        return None
    out = np.empty_like(x)
    kernel(g, x, mean, a, b, c, out)
    return out


# ---------------------------------------------------------------------- max pooling
def _max_pool_loop(x, kh, kw, y, code):
    # y[n,i,j,c] = max over the window's offsets k = u·kw + v in row-major order, code = the
    # first k holding it: a later offset replaces it only when strictly larger. A NaN replaces
    # anything and nothing replaces it (bar a later NaN), so it propagates as in np.maximum.
    n, h_out, w_out, c = y.shape
    for s in range(n):
        for i in range(h_out):
            for j in range(w_out):
                for ch in range(c):
                    y[s, i, j, ch] = x[s, i * kh, j * kw, ch]
                    code[s, i, j, ch] = 0
                for u in range(kh):
                    for v in range(kw):
                        k = u * kw + v
                        for ch in range(c):
                            value = x[s, i * kh + u, j * kw + v, ch]
                            if (value > y[s, i, j, ch]) | (value != value):
                                y[s, i, j, ch] = value
                                code[s, i, j, ch] = k


def _max_pool_backward_loop(g, code, kh, kw, grad_x):
    # dL/dx at window offset k of window (i, j) is g[i, j] where k is its argmax, else 0;
    # written row by row of dL/dx, so the writes run along memory.
    n, h_out, w_out, c = g.shape
    for s in range(n):
        for i in range(h_out):
            for u in range(kh):
                for j in range(w_out):
                    for v in range(kw):
                        k = u * kw + v
                        for ch in range(c):
                            grad_x[s, i * kh + u, j * kw + v, ch] = (
                                g[s, i, j, ch] if code[s, i, j, ch] == k else 0.0)


def max_pool_tiles(x: np.ndarray, pool_size: tuple[int, int]
                   ) -> tuple[np.ndarray, np.ndarray] | None:
    """Max pooling over kh×kw windows that tile the image, channels last.

    Args:
        x: (N, H, W, C), C-contiguous, float32 or float64 (rows and columns beyond the last
            whole window belong to none).
        pool_size: (kh, kw), each window at most 255 pixels.

    Returns:
        (y, code): y (N, H // kh, W // kw, C) the window maxima, code (same shape, uint8) the
        flat offset u·kw + v of each window's first maximum; None when the compiled loop does
        not run.
    """
    kh, kw = pool_size
    if kh * kw > 255:
        return None
    kernel = _rows_kernel(_max_pool_loop, x)
    if kernel is None:
        return None
    n, h, w, c = x.shape
    y = np.empty((n, h // kh, w // kw, c), x.dtype)
    code = np.empty(y.shape, np.uint8)
    kernel(x, kh, kw, y, code)
    return y, code


def max_pool_tiles_backward(g: np.ndarray, code: np.ndarray, pool_size: tuple[int, int],
                            image_size: tuple[int, int]) -> np.ndarray | None:
    """dL/dx (N, H, W, C) of ``max_pool_tiles``: g (N, H′, W′, C) routed to each window's
    argmax ``code``, 0 elsewhere (and at the pixels in no window); None when the compiled loop
    does not run (g is copied to C order first if it is not)."""
    kernel = _compiled(_max_pool_backward_loop) if g.dtype in (np.float32, np.float64) else None
    if kernel is None:
        return None
    (kh, kw), (h, w) = pool_size, image_size
    n, h_out, w_out, c = g.shape
    covered = h == h_out * kh and w == w_out * kw
    grad_x = (np.empty if covered else np.zeros)((n, h, w, c), g.dtype)
    kernel(np.ascontiguousarray(g), code, kh, kw, grad_x)
    return grad_x


# ---------------------------------------------------------------------- transpose
def _transpose_loop(a, out):
    # out[j, i] = a[i, j], in whole 16×16 tiles (a tile's rows of both arrays stay in cache, and
    # a fixed trip count lets the compiler unroll it), then the rows and columns left over.
    m, n = a.shape
    m_tiles, n_tiles = m - m % 16, n - n % 16
    for i0 in range(0, m_tiles, 16):
        for j0 in range(0, n_tiles, 16):
            for j in range(16):
                for i in range(16):
                    out[j0 + j, i0 + i] = a[i0 + i, j0 + j]
    for i in range(m_tiles):
        for j in range(n_tiles, n):
            out[j, i] = a[i, j]
    for i in range(m_tiles, m):
        for j in range(n):
            out[j, i] = a[i, j]


def transpose(a: np.ndarray) -> np.ndarray | None:
    """aᵀ as a new C-contiguous (n, m) array for a C-contiguous float32/float64 (m, n) matrix;
    None without numba (or for other arrays): the caller then copies ``a.T`` with NumPy."""
    if a.ndim != 2 or a.dtype not in (np.float32, np.float64) or not a.flags.c_contiguous:
        return None
    kernel = _compiled(_transpose_loop)
    if kernel is None:
        return None
    out = np.empty(a.shape[::-1], dtype=a.dtype)
    kernel(a, out)
    return out
