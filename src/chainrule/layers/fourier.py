"""Conv2D in the frequency domain: the 2-D DFT as a real matrix, one small product per frequency.

A stride-1 cross-correlation of a P_h×P_w padded image x̃ (C channels) with F kernels of kh×kw
taps is, at every frequency φ = (a, b) of the image's discrete Fourier transform, one
multiplication (the correlation theorem):

    Y[n,f](φ) = Σ_c X[n,c](φ) · conj(Ŵ[f,c](φ))

with X = DFT(x̃) and Ŵ = DFT(W zero-padded to P_h×P_w). The DFT is taken over the padded size
itself: the H′ = P_h − kh + 1 rows and W′ = P_w − kw + 1 columns of valid output never read past
the image's edge, so the circular correlation that the DFT computes equals the linear one there.
A real image has a conjugate-symmetric spectrum, so the columns b = 0 … ⌊P_w/2⌋ are enough:
Φ = P_h·(⌊P_w/2⌋ + 1) frequencies.

Everything is a matrix product on real arrays, with θ = 2π(a·h/P_h + b·w/P_w):

    transform    X = Tᵀ x̃       T (P_h·P_w, 2Φ):  T[(h,w), (φ,re)] = cos θ,
                                                T[(h,w), (φ,im)] = −sin θ
    kernels      Ŵ = W T_k      T_k: the rows of T at the kh×kw taps (W zero-padded)
    per φ        Yᵀ_φ = B_φ Xᵀ_φ,   B_φ = [[Ŵ_re, Ŵ_im], [−Ŵ_im, Ŵ_re]]   (2F, 2C) @ (2C, N)
                 (Yᵀ = conj(Ŵ) Xᵀ with its real and imaginary parts stacked: one real product)
    inverse      y = Eᵀ Y       E (2Φ, H′·W′):  E[(φ,re), (i,j)] = c_b cos θ / (P_h P_w),
                                                E[(φ,im), (i,j)] = −c_b sin θ / (P_h P_w)

where c_b = 1 for b = 0 (and b = P_w/2 when P_w is even) and 2 for the other columns, which
stand for themselves and their conjugate mirror: y = Re Σ_φ c_b Y(φ) e^{iθ} / (P_h P_w).

T is applied in two passes, each one matrix product: along the rows (h → a, a real input
becoming complex), then along the columns ((re/im, w) → (b, re/im)), which is what the
Kronecker-structured T amounts to (θ is a sum of a row and a column term) in about a third of the
multiply-adds. E is T's transpose at the output pixels, with c_b / (P_h P_w) in its rows: the
inverse runs the same two passes transposed, in reverse order.

Backward is the chain rule through those linear maps, each one's transpose in reverse order,
with g = dL/dy as (H′·W′, F·N):

    dL/dY = E g        dL/dB_φ = dL/dYᵀ_φ X_φ        dL/dXᵀ_φ = B_φᵀ dL/dYᵀ_φ
    dL/dŴ_re = the two Ŵ_re blocks of dL/dB_φ summed,  dL/dŴ_im = upper right − lower left
    dL/dW = dL/dŴ T_kᵀ          dL/dx̃ = T dL/dX

For the cnn preset's second convolution (32 → 64 channels, 5×5 on 12×12) a training step takes
about a third of the multiply-adds of im2col's three products, and keeps a fifth of the memory
of its column matrix for the backward.
"""

import functools
import math

import numpy as np

from .. import kernels


@functools.lru_cache(maxsize=64)
def _rows_matrix(p: int, rows: int, scaled: bool, dtype: str) -> np.ndarray:
    """The row pass (2p, rows): [(a, re), h] = cos(2π a h / p), [(a, im), h] = −sin(2π a h / p),
    divided by p when ``scaled`` (the inverse's 1/P_h). Read-only."""
    angle = 2 * math.pi * np.outer(np.arange(p), np.arange(rows)) / p
    m = np.stack([np.cos(angle), -np.sin(angle)], axis=1).reshape(2 * p, rows)
    return _frozen(m / p if scaled else m, dtype)


@functools.lru_cache(maxsize=64)
def _columns_matrix(p: int, cols: int, scaled: bool, dtype: str) -> np.ndarray:
    """The column pass (2K, 2·cols), K = ⌊p/2⌋ + 1: the complex product with e^{−2πi b w / p},
    (u + iv) ↦ (u cos + v sin) + i(v cos − u sin), from (re/im, w) to (b, re/im); each row
    times c_b / p when ``scaled`` (the inverse's weights). Read-only."""
    half = p // 2 + 1
    angle = 2 * math.pi * np.outer(np.arange(half), np.arange(cols)) / p
    cos, sin = np.cos(angle), np.sin(angle)
    m = np.stack([np.concatenate([cos, sin], axis=1),
                  np.concatenate([-sin, cos], axis=1)], axis=1)  # (K, 2, 2·cols)
    if scaled:
        weight = np.full(half, 2.0 / p)
        weight[0] = 1.0 / p
        if p % 2 == 0:
            weight[-1] = 1.0 / p
        m = m * weight[:, None, None]
    return _frozen(m.reshape(2 * half, 2 * cols), dtype)


def _frozen(m: np.ndarray, dtype: str) -> np.ndarray:
    m = np.ascontiguousarray(m, dtype=dtype)
    m.flags.writeable = False
    return m


def _dft(ph: int, pw: int, a: np.ndarray, rows: int, cols: int, scaled: bool = False):
    """The spectrum (2Φ, R) of images a (rows, cols, R) (R images side by side, zero-padded to
    P_h×P_w): the row pass, then the column pass. Rows of the result: (a, b, re/im)."""
    dtype = a.dtype.str
    r = _rows_matrix(ph, rows, scaled, dtype)
    c = _columns_matrix(pw, cols, scaled, dtype)
    rest = a.size // (rows * cols)
    s = (r @ a.reshape(rows, cols * rest)).reshape(ph, 2 * cols, rest)
    return np.matmul(c, s).reshape(-1, rest)


def _dft_transposed(ph: int, pw: int, A: np.ndarray, rows: int, cols: int,
                    scaled: bool = False):
    """The transpose of ``_dft``: (rows, cols·R) images from a spectrum (2Φ, R)."""
    dtype = A.dtype.str
    r = _rows_matrix(ph, rows, scaled, dtype)
    c = _columns_matrix(pw, cols, scaled, dtype)
    rest = A.shape[1]
    s = np.matmul(c.T, A.reshape(ph, c.shape[0], rest))  # (P_h, 2·cols, R)
    return r.T @ s.reshape(2 * ph, cols * rest)


def _dft_multiply_adds(ph, pw, rows, cols, rest) -> int:
    return 2 * ph * rows * cols * rest + ph * 2 * (pw // 2 + 1) * 2 * cols * rest


def multiply_adds(n: int, c: int, f: int, padded, kernel, training: bool) -> int:
    """Multiply-adds of one call through this path: forward, and with ``training`` the
    backward too (dL/dW and dL/dx̃), transforms included."""
    ph, pw = padded
    kh, kw = kernel
    freqs = ph * (pw // 2 + 1)
    products = freqs * 4 * f * c * n
    forward = (_dft_multiply_adds(ph, pw, ph, pw, c * n) + products
               + _dft_multiply_adds(ph, pw, kh, kw, f * c)
               + _dft_multiply_adds(ph, pw, ph - kh + 1, pw - kw + 1, f * n))
    return 2 * forward + products if training else forward


def forward(xp: np.ndarray, W: np.ndarray, training: bool):
    """y (N, H′, W′, F) channels-last and the cache for ``backward`` (None unless training).

    Args:
        xp: the padded batch x̃ (N, P_h, P_w, C), channels-last, of W's dtype.
        W: kernels (F, C, kh, kw).
    """
    n, ph, pw, c = xp.shape
    f, _, kh, kw = W.shape
    h_out, w_out = ph - kh + 1, pw - kw + 1
    freqs = ph * (pw // 2 + 1)
    # The batch axis last, x̃ as (P_h, P_w, C·N): X comes out as (φ, re/im, c, n), each
    # frequency's [X_reᵀ; X_imᵀ] (2C, N) in one piece, as the products read it.
    X = _dft(ph, pw, _batch_last(xp, n), ph, pw).reshape(freqs, 2 * c, n)
    w_hat = _dft(ph, pw, np.ascontiguousarray(W.transpose(2, 3, 0, 1)), kh, kw)  # (2Φ, F·C)
    B = _blocks(w_hat.reshape(freqs, 2, f, c))
    Y = np.matmul(B, X)  # (Φ, 2F, N): [Y_reᵀ; Y_imᵀ] per frequency
    y = _dft_transposed(ph, pw, Y.reshape(2 * freqs, f * n), h_out, w_out, scaled=True)
    y = _batch_first(y, n).reshape(n, h_out, w_out, f)
    return y, ((X, B) if training else None)


def backward(grad_y: np.ndarray, cache, xp_shape, kernel, need_input_grad: bool):
    """(dL/dW (F, C, kh, kw), dL/dx̃ (N, P_h, P_w, C) channels-last or None).

    Args:
        grad_y: g = dL/dy (N, F, H′, W′), any memory order (channels-last is read in place).
        cache: what ``forward`` returned with training.
        xp_shape: the padded batch's shape (N, P_h, P_w, C).
        kernel: (kh, kw).
    """
    X, B = cache
    n, ph, pw, c = xp_shape
    _, f, h_out, w_out = grad_y.shape
    kh, kw = kernel
    freqs = ph * (pw // 2 + 1)
    g = _batch_last(grad_y.transpose(0, 2, 3, 1), n)
    dY = _dft(ph, pw, g, h_out, w_out, scaled=True).reshape(freqs, 2 * f, n)  # E g
    dB = np.matmul(dY, X.transpose(0, 2, 1))  # (Φ, 2F, 2C)
    # B_φ holds Ŵ_re twice and Ŵ_im once with each sign: their gradients add up.
    d_hat = np.empty((freqs, 2, f, c), dtype=dB.dtype)
    np.add(dB[:, :f, :c], dB[:, f:, c:], out=d_hat[:, 0])
    np.subtract(dB[:, :f, c:], dB[:, f:, :c], out=d_hat[:, 1])
    grad_W = _dft_transposed(ph, pw, d_hat.reshape(2 * freqs, f * c), kh, kw)
    grad_W = np.ascontiguousarray(grad_W.reshape(kh, kw, f, c).transpose(2, 3, 0, 1))
    if not need_input_grad:
        return grad_W, None
    dX = np.matmul(B.transpose(0, 2, 1), dY)  # (Φ, 2C, N)
    grad_xp = _dft_transposed(ph, pw, dX.reshape(2 * freqs, c * n), ph, pw)
    return grad_W, _batch_first(grad_xp, n).reshape(n, ph, pw, c)


def _blocks(w_hat: np.ndarray) -> np.ndarray:
    """B (Φ, 2F, 2C) = [[Ŵ_re, Ŵ_im], [−Ŵ_im, Ŵ_re]] per frequency, from Ŵ (Φ, re/im, F, C)."""
    freqs, _, f, c = w_hat.shape
    re, im = w_hat[:, 0], w_hat[:, 1]
    B = np.empty((freqs, 2 * f, 2 * c), dtype=w_hat.dtype)
    B[:, :f, :c] = re
    B[:, :f, c:] = im
    np.negative(im, out=B[:, f:, :c])
    B[:, f:, c:] = re
    return B


def _batch_last(a: np.ndarray, n: int) -> np.ndarray:
    """(N, …) → the (…, N) matrix (rows: the rest, one column per sample), C-contiguous."""
    return _transposed(a.reshape(n, -1))


def _batch_first(a: np.ndarray, n: int) -> np.ndarray:
    """The (…, N) matrix back to (N, …) rows, C-contiguous."""
    return _transposed(a.reshape(-1, n))


def _transposed(a: np.ndarray) -> np.ndarray:
    out = kernels.transpose(a)
    return np.ascontiguousarray(a.T) if out is None else out
