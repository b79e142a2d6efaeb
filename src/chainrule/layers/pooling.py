"""Pooling over NCHW images: MaxPool2D, AvgPool2D and GlobalAveragePool2D."""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .. import kernels
from .arguments import flat_image_hint, int_pair, pad_amounts, padding_arg, received_shape
from .base import Layer


class _Pool2D(Layer):
    """Window geometry, input checks and config shared by MaxPool2D and AvgPool2D.

    With x̃ the padded input, k = (kh, kw) the pool size and s = (sh, sw) the strides, window
    (i, j) covers x̃[…, sh·i : sh·i + kh, sw·j : sw·j + kw] and

        H′ = ⌊(H + p_top + p_bottom − kh) / sh⌋ + 1        (W′ likewise)

    Padding: "valid" adds nothing. "same" follows Keras/TensorFlow, as Conv2D does
    (``arguments.pad_amounts``): H′ = ⌈H / sh⌉, padded by max((H′ − 1)·sh + kh − H, 0) rows in
    total, the odd one at the bottom (columns likewise, the odd one on the right). An int p or
    a pair (ph, pw) adds p rows/columns on both sides; like PyTorch it must be at most half
    the pool size, so every window holds a real pixel.
    """

    #: what the padding holds: −∞ for max (never the maximum), 0 for average.
    _pad_value = 0.0

    def __init__(self, pool_size=2, strides=None, padding="valid", name=None, input_shape=None):
        super().__init__(name=name, input_shape=input_shape)
        kind = type(self).__name__
        self.pool_size = int_pair(pool_size, "pool_size", kind)
        self.strides = self.pool_size if strides is None else int_pair(strides, "strides", kind)
        self.padding = padding_arg(padding, kind)
        if isinstance(self.padding, tuple):
            for p, k in zip(self.padding, self.pool_size, strict=True):
                if 2 * p > k:
                    raise ValueError(
                        f"{kind}: padding {self.padding} must be at most half of pool_size "
                        f"{self.pool_size} (a window of padding alone has no pixel to pool, "
                        "PyTorch refuses it too); use a smaller padding or padding='same'"
                    )

    # ------------------------------------------------------------------ geometry
    def _pads(self, h: int, w: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """((top, bottom), (left, right)) rows/columns of padding for an h×w image."""
        return pad_amounts(self.padding, (h, w), self.pool_size, self.strides)

    def _spatial_out(self, h: int, w: int) -> tuple[int, int]:
        (top, bottom), (left, right) = self._pads(h, w)
        (kh, kw), (sh, sw) = self.pool_size, self.strides
        return (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-2], *self._spatial_out(*input_shape[-2:]))

    def check_sample_shape(self, shape, batch=None):
        received = received_shape(shape, batch)
        if len(shape) not in (2, 3):
            raise ValueError(
                f"{self.label} expected input of shape (N, C, H, W) or (N, H, W), got input "
                f"of shape {received}{flat_image_hint(shape)}"
            )
        h, w = shape[-2:]
        (top, bottom), (left, right) = self._pads(h, w)
        padded = (h + top + bottom, w + left + right)
        if padded[0] < self.pool_size[0] or padded[1] < self.pool_size[1]:
            raise ValueError(
                f"{self.label}: pool_size {self.pool_size} is larger than the padded input "
                f"{padded[0]}×{padded[1]} (input of shape {received}, padding "
                f"{self.padding!r}); use a smaller pool_size or padding='same'"
            )

    def _padded(self, x_nchw: np.ndarray) -> np.ndarray:
        """x_nchw (N, C, H, W) with its padding (x_nchw itself when there is none)."""
        n, c, h, w = x_nchw.shape
        (top, bottom), (left, right) = self._pads(h, w)
        if not (top or bottom or left or right):
            return x_nchw
        xp = np.full((n, c, h + top + bottom, w + left + right), self._pad_value,
                     dtype=x_nchw.dtype)
        xp[:, :, top:top + h, left:left + w] = x_nchw
        return xp

    def _tile_rows(self, x_nchw: np.ndarray) -> list[np.ndarray] | None:
        """The kh window rows of x_nchw as strided (N, C, H′, kw·W′) views when the windows
        tile the image (strides equal to the pool size, no padding; rows or columns left over
        at the bottom or right belong to no window), None otherwise: row u holds
        x[…, kh·i + u, :kw·W′], whose entries v, v + kw, … are window offset (u, v).

        The views are no copies. In channels-last memory a row u is a run of kw·W′·C
        contiguous values per (sample, window row), so element-wise passes between whole rows
        (and arrays in y's layout) walk long runs; one offset (u, v) alone is runs of C values.
        """
        h, w = x_nchw.shape[2:]
        (kh, kw) = self.pool_size
        if self.strides != self.pool_size or self._pads(h, w) != ((0, 0), (0, 0)):
            return None
        h_out, w_out = h // kh, w // kw
        return [x_nchw[:, :, u:u + kh * h_out:kh, :kw * w_out] for u in range(kh)]

    def _row_offsets(self, row: np.ndarray) -> list[np.ndarray]:
        """The kw window offsets (u, 0), …, (u, kw − 1) of one window row (N, C, H′, kw·W′)
        from ``_tile_rows``, as strided (N, C, H′, W′) views."""
        kw = self.pool_size[1]
        return [row[..., v::kw] for v in range(kw)]

    def _offsets_first(self, xp: np.ndarray) -> np.ndarray:
        """Every window of xp, offset first: (kh·kw, N, C, H′, W′), entry [u·kw + v, n, c, i, j]
        = x̃[n, c, sh·i + u, sw·j + v].

        sliding_window_view is a strided (N, C, H′, W′, kh, kw) view, no copy. Moving the window
        axes to the front and copying once gives kh·kw contiguous (N, C, H′, W′) slices, so the
        max or sum over the window is an element-wise pass over a few large arrays instead of
        a reduction over millions of rows of 4 or 9 values (several times faster).
        """
        (sh, sw) = self.strides
        windows = sliding_window_view(xp, self.pool_size, axis=(2, 3))[:, :, ::sh, ::sw]
        stacked = np.ascontiguousarray(windows.transpose(4, 5, 0, 1, 2, 3))
        return stacked.reshape(-1, *windows.shape[:4])

    def _scatter(self, grad_nchw, x_shape, select) -> np.ndarray:
        """dL/dx (shape x_shape) from per-window-offset contributions, padding cropped.

        The loop runs over the kh·kw window offsets only (4 for a 2×2 pool, 9 for 3×3), each
        handling every sample, channel and window at once: offset (u, v) of window (i, j) is
        pixel x̃[…, sh·i + u, sw·j + v], a strided slice. Within one offset the windows read
        distinct pixels, so a slice ``+=`` adds each contribution once; overlapping windows
        (strides < pool_size) meet across offsets and accumulate there.
        ``select(k)`` gives the (N, C, H′, W′) contribution of flat offset k = u·kw + v.
        """
        n, c, h, w = x_shape
        (top, bottom), (left, right) = self._pads(h, w)
        (kh, kw), (sh, sw) = self.pool_size, self.strides
        h_out, w_out = grad_nchw.shape[2:]
        grad_xp = np.zeros((n, c, h + top + bottom, w + left + right), dtype=grad_nchw.dtype)
        for u in range(kh):
            rows = slice(u, u + sh * (h_out - 1) + 1, sh)
            for v in range(kw):
                columns = slice(v, v + sw * (w_out - 1) + 1, sw)
                grad_xp[:, :, rows, columns] += select(u * kw + v)
        if not (top or bottom or left or right):
            return grad_xp
        return grad_xp[:, :, top:top + h, left:left + w].copy()

    def get_config(self):
        return {
            **super().get_config(),
            "pool_size": list(self.pool_size),
            "strides": list(self.strides),
            "padding": self.padding if isinstance(self.padding, str) else list(self.padding),
        }


class MaxPool2D(_Pool2D):
    """Max pooling: the largest value of each kh×kw window, windows every (sh, sw) pixels.

    Forward:   y[n,c,i,j] = max_{u,v} x̃[n, c, sh·i + u, sw·j + v],
               a[n,c,i,j] = the flat offset u·kw + v of that maximum (the argmax)
    Backward:  dL/dx̃[n, c, sh·i + u, sw·j + v] += g[n,c,i,j]  for (u, v) = a[n,c,i,j],
               0 for the other pixels of the window; dL/dx = dL/dx̃ without the padding

    The max is piecewise the identity on one input, so its derivative routes g to the argmax
    only. A pixel that is the maximum of several overlapping windows (strides < pool_size)
    collects the gradient of each. The padding holds −∞, so it is never the maximum.

    Ties: the first maximum in row-major window order wins (``np.argmax``'s rule), so a window
    of equal values sends its whole gradient to its top-left pixel, deterministically. PyTorch's
    CPU kernel makes the same choice (it replaces the running maximum only on a strictly larger
    value), though its documentation does not promise it.

    A rank-3 input (N, H, W) is read as one channel; the output is then (N, H′, W′).
    Cache (training only): for windows that tile the image (strides = pool_size, no padding,
    the cnn preset's 2×2 pooling) x, y and the maxima of each window row but the last (for
    2×2, the top row's), from which backward finds each window's first maximum again (no
    index; y and dL/dx keep x's memory layout, see ``layers.layout``); with numba
    (``chainrule.kernels``) and x in channels-last memory, such windows are pooled in one
    compiled pass instead, which keeps the argmax as uint8 (channels-last, as y and dL/dx);
    otherwise the argmax a (N, C, H′, W′) as small unsigned ints (uint8 for windows of up to
    255 pixels) and the input shape.

    Args:
        pool_size: (kh, kw), or an int for a square window (default 2).
        strides: (sh, sw) or an int; None (default) means pool_size (non-overlapping windows).
        padding: "valid" (default), "same" or an int / pair (see _Pool2D for the rules).

    Raises:
        ValueError: at construction for a non-positive pool_size or stride, a negative or too
            large padding or an unknown padding string; at forward for an input that is not
            (N, C, H, W) or (N, H, W), or a pool larger than the padded input.
    """

    _pad_value = -math.inf

    def _forward(self, x, training):
        x_nchw = x[:, None] if x.ndim == 3 else x
        rows = self._tile_rows(x_nchw)
        x_nhwc = x_nchw.transpose(0, 2, 3, 1)
        pooled = (kernels.max_pool_tiles(x_nhwc, self.pool_size)
                  if rows is not None and x_nhwc.flags.c_contiguous else None)
        if pooled is not None:
            # The compiled pass over channels-last memory: y and the argmax in one loop.
            y_nhwc, code = pooled
            y = y_nhwc.transpose(0, 3, 1, 2)
            if training:
                self.cache = ("code", code, x_nchw.shape)
            return y[:, 0] if x.ndim == 3 else y
        if rows is not None:
            # Windows that tile the image: the maximum m_u of each window row's kw offsets,
            # then y, the maximum of the kh row maxima (long runs, see ``_tile_rows``).
            row_max = [_maximum(self._row_offsets(row)) for row in rows]
            y = row_max[0] if len(row_max) == 1 else _maximum(row_max)
            if training:
                self.cache = ("tiles", x_nchw, y, row_max[:-1])
            return y[:, 0] if x.ndim == 3 else y
        stacked = self._offsets_first(self._padded(x_nchw))
        y = stacked.max(axis=0)
        if training:
            # The argmax is the first offset holding the maximum. Offset k gets rank K − k
            # (K = kh·kw offsets), so among the offsets equal to y the first has the largest
            # rank, K − argmax: element-wise passes again, no reduction over short rows.
            K = len(stacked)
            rank = np.arange(K, 0, -1, dtype=np.min_scalar_type(K)).reshape(K, 1, 1, 1, 1)
            argmax = K - ((stacked == y) * rank).max(axis=0)
            self.cache = ("windows", argmax, x_nchw.shape)
        return y[:, 0] if x.ndim == 3 else y

    def _backward(self, grad_y, need_input_grad):
        if not need_input_grad:
            return None
        grad_nchw = grad_y[:, None] if grad_y.ndim == 3 else grad_y
        grad_x = None
        if self.cache[0] == "tiles":
            grad_x = self.laid_out(self._tiles_backward(grad_nchw, *self.cache[1:]))
        else:
            kind, argmax, x_shape = self.cache
            if kind == "code":  # the compiled forward's argmax, channels-last
                grad_x = kernels.max_pool_tiles_backward(
                    grad_nchw.transpose(0, 2, 3, 1), argmax, self.pool_size, x_shape[2:])
                if grad_x is not None:
                    grad_x = self.laid_out(grad_x.transpose(0, 3, 1, 2))
                argmax = argmax.transpose(0, 3, 1, 2)  # NCHW: kernels turned off since forward
            if grad_x is None:
                grad_x = self._scatter(grad_nchw, x_shape, lambda k: grad_nchw * (argmax == k))
        return grad_x[:, 0] if grad_y.ndim == 3 else grad_x

    def _tiles_backward(self, grad_nchw, x_nchw, y, row_max):
        """dL/dx for windows that tile the image, without an argmax index.

        Row-major window order visits the rows u = 0, 1, … of a window and, within a row, its
        offsets v = 0, 1, …, so the first maximum lies in the first row whose maximum
        m_u = max_v x[u, v] (``row_max``, kept by the forward for every row but the last)
        equals y, at the first offset of that row equal to y. g is split by that rule twice.
        With r the part of g that no earlier row has taken (r = g at first), row u takes
        g_u = r ⊙ [m_u = y] and r keeps r ⊙ [m_u ≠ y]; the last row takes what is left, since
        a window whose earlier rows all fall short of the maximum holds it there. Within row
        u, offset v takes g_u ⊙ [x[u, v] = y] of what no earlier offset of the row took, the
        last offset the rest. So each window's g goes whole to its first maximum, as
        ``np.argmax`` chooses, and every part is exactly g or 0. Pixels in no window get 0.
        """
        (kh, kw) = self.pool_size
        covered = x_nchw.shape[2] % kh == 0 and x_nchw.shape[3] % kw == 0
        grad_x = np.empty_like(x_nchw) if covered else np.zeros_like(x_nchw)
        x_rows, grad_rows = self._tile_rows(x_nchw), self._tile_rows(grad_x)
        # r in y's memory layout (the copy reorders g, e.g. NCHW after a Flatten), so that
        # every pass below walks x, y, r and dL/dx in the same order.
        remaining = np.empty_like(y)
        np.copyto(remaining, grad_nchw)
        taken = np.empty_like(y, dtype=bool)
        for u in range(kh):
            if u < kh - 1:
                np.equal(row_max[u], y, out=taken)
                g_u = remaining * taken
                remaining *= np.logical_not(taken, out=taken)
            else:
                g_u = remaining
            x_u, grad_u = self._row_offsets(x_rows[u]), self._row_offsets(grad_rows[u])
            for v in range(kw - 1):
                np.equal(x_u[v], y, out=taken)
                np.multiply(g_u, taken, out=grad_u[v])
                np.logical_not(taken, out=taken)
                if v < kw - 2:
                    g_u *= taken
                else:
                    np.multiply(g_u, taken, out=grad_u[v + 1])
            if kw == 1:
                grad_u[0][...] = g_u
        return grad_x


def _maximum(arrays: list[np.ndarray]) -> np.ndarray:
    """The element-wise maximum of equally shaped arrays, a new array in the memory order of
    the first (a copy of it when it is the only one)."""
    out = np.maximum(arrays[0], arrays[1]) if len(arrays) > 1 else arrays[0].copy(order="K")
    for a in arrays[2:]:
        np.maximum(out, a, out=out)
    return out


class AvgPool2D(_Pool2D):
    """Average pooling: the mean of each kh×kw window, windows every (sh, sw) pixels.

    Forward:   y[n,c,i,j] = (1 / (kh·kw)) Σ_{u,v} x̃[n, c, sh·i + u, sw·j + v]
    Backward:  dL/dx̃[n, c, sh·i + u, sw·j + v] += g[n,c,i,j] / (kh·kw)  for every (u, v);
               dL/dx = dL/dx̃ without the padding

    Each window pixel enters its mean with weight 1/(kh·kw); overlapping windows accumulate.
    Padding counts as zeros in the mean (the divisor is always kh·kw), like PyTorch's default
    ``count_include_pad=True``; Keras/TensorFlow instead average over the real pixels only.

    A rank-3 input (N, H, W) is read as one channel; the output is then (N, H′, W′).
    Cache (training only): the input shape.

    Args:
        pool_size: (kh, kw), or an int for a square window (default 2).
        strides: (sh, sw) or an int; None (default) means pool_size (non-overlapping windows).
        padding: "valid" (default), "same" or an int / pair (see _Pool2D for the rules).

    Raises:
        ValueError: as MaxPool2D.
    """

    def _forward(self, x, training):
        x_nchw = x[:, None] if x.ndim == 3 else x
        stacked = self._offsets_first(self._padded(x_nchw))
        y = stacked.sum(axis=0) / float(len(stacked))
        if training:
            self.cache = x_nchw.shape
        return y[:, 0] if x.ndim == 3 else y

    def _backward(self, grad_y, need_input_grad):
        if not need_input_grad:
            return None
        grad_nchw = grad_y[:, None] if grad_y.ndim == 3 else grad_y
        share = grad_nchw / float(self.pool_size[0] * self.pool_size[1])
        grad_x = self._scatter(grad_nchw, self.cache, lambda k: share)
        return grad_x[:, 0] if grad_y.ndim == 3 else grad_x


class GlobalAveragePool2D(Layer):
    """The mean of each channel over all pixels: (N, C, H, W) → (N, C).

    Forward:   y[n,c] = (1 / (H·W)) Σ_{i,j} x[n,c,i,j]
    Backward:  dL/dx[n,c,i,j] = g[n,c] / (H·W)   (every pixel enters the mean with weight 1/(H·W))

    Cache (training only): the input shape.

    Raises:
        ValueError: at forward for an input that is not (N, C, H, W).
    """

    def compute_output_shape(self, input_shape):
        return (input_shape[0],)

    def check_sample_shape(self, shape, batch=None):
        if len(shape) != 3:
            received = received_shape(shape, batch)
            hint = "; for one channel use x[:, None]" if len(shape) == 2 else flat_image_hint(shape)
            raise ValueError(
                f"{self.label} expected input of shape (N, C, H, W), got input of shape "
                f"{received}{hint}"
            )

    def _forward(self, x, training):
        if training:
            self.cache = x.shape
        return x.sum(axis=(2, 3)) / float(x.shape[2] * x.shape[3])

    def _backward(self, grad_y, need_input_grad):
        if not need_input_grad:
            return None
        n, c, h, w = self.cache
        grad_x = np.empty(self.cache, dtype=grad_y.dtype)
        grad_x[...] = (grad_y / float(h * w))[:, :, None, None]
        return grad_x
