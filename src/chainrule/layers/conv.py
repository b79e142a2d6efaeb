"""Conv2D: 2-D cross-correlation over NCHW images, as im2col and one matrix product."""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .. import initializers
from ..parameter import Parameter
from ..validate import boolean, positive_int
from .arguments import int_pair, pad_amounts, padding_arg, received_shape
from .base import Layer


class Conv2D(Layer):
    """2-D convolution (cross-correlation, as in PyTorch and Keras) over images in NCHW order.

    With x̃ the input zero-padded by p, s the stride and d the dilation:

    Forward:   y[n,f,i,j] = b[f] + Σ_{c,u,v} W[f,c,u,v] · x̃[n, c, s·i + d·u, s·j + d·v]

               x (N, C, H, W), W (F, C, kh, kw), b (F,), y (N, F, H′, W′),
               H′ = ⌊(H + p_top + p_bottom − d·(kh − 1) − 1) / s⌋ + 1   (W′ likewise)

    As a matrix product (im2col): the column matrix X_col (N·H′·W′, kh·kw·C) holds in row
    (n,i,j) and column (u,v,c) the input pixel x̃[n, c, s·i + d·u, s·j + d·v], so

               Z = X_col W_mat,   W_mat = W arranged as (kh·kw·C, F),   Z (N·H′·W′, F)

    Backward:  with g = dL/dy and G = g as (N·H′·W′, F):
               dL/dW_mat = X_colᵀ G               (kh·kw·C, F) → W's (F, C, kh, kw)
               dL/db[f] = Σ_{n,i,j} g[n,f,i,j]
               dL/dX_col = G W_matᵀ              (N·H′·W′, kh·kw·C)
               dL/dx̃[n, c, s·i + d·u, s·j + d·v] += dL/dX_col[(n,i,j), (u,v,c)]   (col2im)
               dL/dx = dL/dx̃ without the padding

    Each is the chain rule on the forward sum: ∂y[n,f,i,j]/∂W[f,c,u,v] = x̃[n, c, s·i+d·u, s·j+d·v]
    and ∂y[n,f,i,j]/∂x̃[n, c, s·i+d·u, s·j+d·v] = W[f,c,u,v]; an input pixel read by several
    windows collects the gradient of each (col2im is the adjoint of im2col).

    A rank-3 input (N, H, W) is read as one channel, (N, 1, H, W); its gradient has the input's
    shape. Cache (training only): X_col and the input and padded shapes.

    Args:
        filters: F, the number of output channels.
        kernel_size: (kh, kw), or an int for a square kernel.
        strides: (sh, sw) or an int.
        padding: "valid" (none), "same" (output H′ = ⌈H / s⌉, W′ = ⌈W / s⌉, as Keras and
            TensorFlow), an int or a pair (ph, pw) of zero rows/columns added on both sides.
            "same" pads max((⌈H / s⌉ − 1)·s + (k − 1)·d + 1 − H, 0) rows in total, the odd one
            at the bottom (columns likewise, the odd one on the right): with stride 1 that is
            d·(k − 1) and H′ = H, as PyTorch's ``padding='same'``; with a stride it depends on
            the input size (PyTorch refuses that case). The rule is ``arguments.pad_amounts``,
            shared with pooling.
        dilation: (dh, dw) or an int: the spacing between kernel taps.
        use_bias: whether to add b.
        kernel_initializer: initializer name for W ("he_normal" by default; fan_in = C·kh·kw).
        bias_initializer: initializer name for b ("zeros" by default).

    Raises:
        ValueError: at construction for a non-positive filters, kernel size, stride or dilation,
            a negative padding, an unknown padding string or initializer, or a use_bias other
            than True/False; at forward for an input that is
            not (N, C, H, W) or (N, H, W), a channel count other than the one the layer was
            built for, or a kernel larger than the padded input.
    """

    def __init__(
        self,
        filters: int,
        kernel_size,
        strides=1,
        padding="valid",
        dilation=1,
        use_bias: bool = True,
        kernel_initializer: str = "he_normal",
        bias_initializer: str = "zeros",
        name: str | None = None,
        input_shape=None,
    ):
        super().__init__(name=name, input_shape=input_shape)
        self.filters = positive_int(filters, "filters", "Conv2D")
        self.kernel_size = int_pair(kernel_size, "kernel_size", "Conv2D")
        self.strides = int_pair(strides, "strides", "Conv2D")
        self.dilation = int_pair(dilation, "dilation", "Conv2D")
        self.padding = padding_arg(padding, "Conv2D")
        self.use_bias = boolean(use_bias, "use_bias", "Conv2D")
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        initializers.get(kernel_initializer, "Conv2D: kernel_initializer")
        initializers.get(bias_initializer, "Conv2D: bias_initializer")
        self.W: Parameter | None = None
        self.b: Parameter | None = None

    def _pads(self, h: int, w: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """((top, bottom), (left, right)) zero rows/columns added around an h×w image."""
        return pad_amounts(self.padding, (h, w), self.kernel_size, self.strides, self.dilation)

    # ------------------------------------------------------------------ building and shapes
    def _build(self, input_shape, rng):
        channels = 1 if len(input_shape) == 2 else input_shape[0]
        shape = (self.filters, channels, *self.kernel_size)
        self.W = Parameter(initializers.get(self.kernel_initializer)(shape, rng, self.dtype), "W")
        self._params = [self.W]
        if self.use_bias:
            b = initializers.get(self.bias_initializer)((self.filters,), rng, self.dtype)
            self.b = Parameter(b, "b")
            self._params.append(self.b)

    def param_shapes(self, input_shape):
        channels = 1 if len(input_shape) == 2 else input_shape[0]
        shapes = {"W": (self.filters, channels, *self.kernel_size)}
        if self.use_bias:
            shapes["b"] = (self.filters,)
        return shapes

    def _spatial_out(self, h: int, w: int) -> tuple[int, int]:
        out = []
        for size, (before, after), k, s, d in zip(
            (h, w), self._pads(h, w), self.kernel_size, self.strides, self.dilation, strict=True
        ):
            out.append((size + before + after - d * (k - 1) - 1) // s + 1)
        return tuple(out)

    def compute_output_shape(self, input_shape):
        return (self.filters, *self._spatial_out(*input_shape[-2:]))

    def check_sample_shape(self, shape, batch=None):
        received = received_shape(shape, batch)
        if len(shape) not in (2, 3):
            hint = ""
            if len(shape) == 1:
                side = math.isqrt(shape[0])
                if side * side == shape[0]:
                    hint = (f"; reshape flat images with x.reshape(-1, 1, {side}, {side}) "
                            f"or x.reshape(-1, {side}, {side})")
                else:
                    hint = "; reshape flat images to (N, C, H, W) or (N, H, W)"
            raise ValueError(
                f"{self.label} expected input of shape (N, C, H, W) or (N, H, W), got "
                f"input of shape {received}{hint}"
            )
        channels = 1 if len(shape) == 2 else shape[0]
        if self.built and channels != self.W.value.shape[1]:
            note = " (a rank-3 input (N, H, W) is one channel)" if len(shape) == 2 else ""
            raise ValueError(
                f"{self.label} expected {self.W.value.shape[1]} input channels on axis 1, "
                f"got input of shape {received}{note}"
            )
        h, w = shape[-2:]
        (top, bottom), (left, right) = self._pads(h, w)
        span = tuple(d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation, strict=True))
        padded = (h + top + bottom, w + left + right)
        if padded[0] < span[0] or padded[1] < span[1]:
            raise ValueError(
                f"{self.label}: kernel {self.kernel_size} with dilation {self.dilation} spans "
                f"{span[0]}×{span[1]} pixels, larger than the padded input "
                f"{padded[0]}×{padded[1]} (input of shape {received}, padding "
                f"{self.padding!r}); use a smaller kernel, more padding or padding='same'"
            )

    # ------------------------------------------------------------------ forward / backward
    def _kernel_matrix(self) -> np.ndarray:
        """W (F, C, kh, kw) arranged as W_mat (kh·kw·C, F), the order of X_col's columns."""
        f, c, kh, kw = self.W.value.shape
        return self.W.value.transpose(2, 3, 1, 0).reshape(kh * kw * c, f)

    def _forward(self, x, training):
        x_nchw = x[:, None] if x.ndim == 3 else x
        cols, padded_shape, (h_out, w_out) = self._im2col(x_nchw)
        n = x_nchw.shape[0]
        # One GEMM, computed as Zᵀ = W_matᵀ X_colᵀ (F, N·H′·W′): BLAS reads both transposes in
        # place, and Zᵀ's (F, N) → (N, F) reorder into NCHW moves whole H′·W′ images, in the
        # same pass that adds the bias.
        z = np.matmul(self._kernel_matrix().T, cols.T)
        z_nfp = z.reshape(self.filters, n, h_out * w_out).transpose(1, 0, 2)
        y = np.empty((n, self.filters, h_out, w_out), dtype=z.dtype)
        y_flat = y.reshape(n, self.filters, h_out * w_out)
        if self.use_bias:
            np.add(z_nfp, self.b.value[:, None], out=y_flat)
        else:
            np.copyto(y_flat, z_nfp)
        if training:
            self.cache = (cols, x.shape, padded_shape)
        return y

    def _im2col(self, x):
        """X_col (N·H′·W′, kh·kw·C) of a (N, C, H, W) batch, the padded shape and (H′, W′).

        The input is first laid out channels-last (N, H̃, W̃, C), zero-padded in the same copy;
        sliding_window_view over it is a strided view (no copy), and the reshape of its
        transpose is the one copy that builds X_col. Channels-last puts the C values of a
        pixel, and the kw taps of a kernel row, next to each other in memory, so that copy (and
        the sums in col2im) move runs of kw·C values rather than runs of W′ values.
        """
        n, c, h, w = x.shape
        (top, bottom), (left, right) = self._pads(h, w)
        xp = np.zeros((n, h + top + bottom, w + left + right, c), dtype=x.dtype)
        xp[:, top:top + h, left:left + w] = x.transpose(0, 2, 3, 1)
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.strides, self.dilation
        windows = sliding_window_view(xp, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(1, 2))
        # (N, H′, W′, C, kh, kw): output positions every s pixels, kernel taps every d pixels.
        windows = windows[:, ::sh, ::sw, :, ::dh, ::dw]
        h_out, w_out = windows.shape[1:3]
        cols = windows.transpose(0, 1, 2, 4, 5, 3).reshape(n * h_out * w_out, kh * kw * c)
        return cols, xp.shape, (h_out, w_out)

    def _backward(self, grad_y, need_input_grad):
        cols, x_shape, padded_shape = self.cache
        n, f, h_out, w_out = grad_y.shape
        c, (kh, kw) = padded_shape[3], self.kernel_size
        # Gᵀ (F, N·H′·W′): the one copy of grad_y, whole H′·W′ images at a time. The products
        # below use Gᵀ and its transpose in place: dL/dW_matᵀ = Gᵀ X_col, dL/dX_col = G W_matᵀ.
        G_T = np.ascontiguousarray(grad_y.reshape(n, f, -1).transpose(1, 0, 2)).reshape(f, -1)
        grad_W = (G_T @ cols).reshape(f, kh, kw, c).transpose(0, 3, 1, 2)
        self.W.grad = np.ascontiguousarray(grad_W)
        if self.use_bias:
            self.b.grad = G_T.sum(axis=1)
        if not need_input_grad:
            return None
        grad_cols = np.matmul(G_T.T, self._kernel_matrix().T)
        grad_x = self._col2im(grad_cols, padded_shape, (n, h_out, w_out), x_shape[-2:])
        return grad_x.reshape(x_shape)

    def _col2im(self, grad_cols, padded_shape, out_shape, image_size):
        """dL/dx (N, C, H, W) from dL/dX_col: the adjoint of ``_im2col``, padding cropped.

        The loop runs over the kh·kw kernel taps only (at most 25 for a 5×5 kernel): tap (u, v)
        of every window, for every sample and channel at once, reads the pixels
        x̃[:, d·u + s·i, d·v + s·j, :] (channels-last), a strided slice. Within one tap the
        windows read distinct pixels, so a slice ``+=`` adds each gradient once; overlapping
        windows meet across taps. The crop back to NCHW is the one final copy.
        """
        n, h_out, w_out = out_shape
        _, hp, wp, c = padded_shape
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.strides, self.dilation
        grad = grad_cols.reshape(n, h_out, w_out, kh, kw, c)
        grad_xp = np.zeros(padded_shape, dtype=grad_cols.dtype)
        for u in range(kh):
            rows = slice(dh * u, dh * u + sh * (h_out - 1) + 1, sh)
            for v in range(kw):
                columns = slice(dw * v, dw * v + sw * (w_out - 1) + 1, sw)
                grad_xp[:, rows, columns] += grad[:, :, :, u, v]
        (top, bottom), (left, right) = self._pads(*image_size)
        grad_x = grad_xp[:, top:hp - bottom, left:wp - right].transpose(0, 3, 1, 2)
        return np.ascontiguousarray(grad_x)

    # ------------------------------------------------------------------ config
    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=list(self.kernel_size),
            strides=list(self.strides),
            padding=self.padding if isinstance(self.padding, str) else list(self.padding),
            dilation=list(self.dilation),
            use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer,
            bias_initializer=self.bias_initializer,
        )
        return config
