"""Conv2D: 2-D cross-correlation over NCHW images, as im2col and one matrix product, or per
frequency of the images' Fourier transform (layers.fourier)."""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .. import initializers
from ..parameter import Parameter
from ..validate import boolean, positive_int
from . import fourier, layout
from .arguments import int_pair, pad_amounts, padding_arg, received_shape
from .base import Layer

#: At inference a batch whose column matrix X_col would exceed this many bytes is convolved in
#: slices of samples, so memory stays bounded (a batch of 1,000 digits would need a 205 MB
#: X_col in the cnn's second convolution, a fresh mapping of the operating system's each time).
INFERENCE_COLUMN_BYTES = 16 * 2**20

#: The algorithms ``Conv2D(algorithm=...)`` takes.
ALGORITHMS = ("auto", "im2col", "fourier")

#: "auto" takes the Fourier path when its multiply-adds (transforms included, see
#: ``fourier.multiply_adds``) are below this share of im2col's: the break-even lies above the
#: products' count because the transforms and reorders move more memory per multiply-add.
FOURIER_SHARE = 0.75


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
               dL/dX_col = G W_matᵀ              (N·H′·W′, kh·kw·C); its column block
                             (u, v) is G W[:, :, u, v]   (N·H′·W′, C)
               dL/dx̃[n, c, s·i + d·u, s·j + d·v] += dL/dX_col[(n,i,j), (u,v,c)]   (col2im)
               dL/dx = dL/dx̃ without the padding

    Each is the chain rule on the forward sum: ∂y[n,f,i,j]/∂W[f,c,u,v] = x̃[n, c, s·i+d·u, s·j+d·v]
    and ∂y[n,f,i,j]/∂x̃[n, c, s·i+d·u, s·j+d·v] = W[f,c,u,v]; an input pixel read by several
    windows collects the gradient of each (col2im is the adjoint of im2col).

    A rank-3 input (N, H, W) is read as one channel, (N, 1, H, W); its gradient has the input's
    shape. Z is y in channels-last memory (row (n,i,j) holds pixel (n,i,j)'s F channels): inside
    a model y goes on as its (N, F, H′, W′) view, and dL/dx comes back likewise (see
    ``layers.layout``). Cache (training only): X_col and the input and padded shapes. At
    inference a batch whose X_col would pass ``INFERENCE_COLUMN_BYTES`` goes through in slices
    of samples, each one product, into one Z.

    With stride 1 and dilation 1 the same sums can be taken per frequency of the padded
    images' 2-D Fourier transform instead (``layers.fourier``: the correlation theorem, with the
    transforms as matrix products and the backward as their transposes). It computes the same
    y, dL/dW and dL/dx up to rounding. A wide kernel over a small image (the cnn preset's 5×5,
    32 → 64 channels on 12×12) takes about a third of im2col's multiply-adds that way, and its
    cache (the transformed batch and the per-frequency kernel blocks) is a fifth of X_col.

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
        algorithm: "im2col", "fourier" (stride 1 and dilation 1 only) or "auto" (the default):
            per batch, the Fourier path when it is allowed and its multiply-adds, transforms
            included, are under ``FOURIER_SHARE`` of im2col's; im2col otherwise.

    Raises:
        ValueError: at construction for a non-positive filters, kernel size, stride or dilation,
            a negative padding, an unknown padding string or initializer, a use_bias other
            than True/False, an unknown algorithm, or "fourier" with a stride or dilation
            other than 1; at forward for an input that is
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
        algorithm: str = "auto",
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
        if algorithm not in ALGORITHMS:
            raise ValueError(
                f"Conv2D: algorithm must be one of {', '.join(map(repr, ALGORITHMS))}, got "
                f"{algorithm!r}"
            )
        if algorithm == "fourier" and (self.strides != (1, 1) or self.dilation != (1, 1)):
            raise ValueError(
                f"Conv2D: algorithm='fourier' needs strides 1 and dilation 1, got strides "
                f"{self.strides} and dilation {self.dilation}; use algorithm='im2col' or 'auto'"
            )
        self.algorithm = algorithm
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
        n, c, h, w = x_nchw.shape
        h_out, w_out = self._spatial_out(h, w)
        algorithm = self.algorithm_for(x_nchw.shape, training)
        if not training:
            step = max(1, INFERENCE_COLUMN_BYTES // self._bytes_per_sample(algorithm, c, h, w,
                                                                           x_nchw.itemsize))
            if n > step:
                # At inference nothing is kept: a large batch goes through in slices of
                # samples, each one's work arrays at most INFERENCE_COLUMN_BYTES, into one Z.
                z = np.empty((n * h_out * w_out, self.filters), dtype=x_nchw.dtype)
                rows = h_out * w_out
                for start in range(0, n, step):
                    stop = min(n, start + step)
                    z[start * rows:stop * rows] = self._product(x_nchw[start:stop], algorithm)[0]
                return layout.images(z, (n, self.filters, h_out, w_out))
        z, kept, padded_shape = self._product(x_nchw, algorithm, training)
        if training:
            self.cache = (algorithm, kept, x.shape, padded_shape)
        return layout.images(z, (n, self.filters, h_out, w_out))

    def multiply_adds(self, batch_shape, training: bool = True) -> dict[str, int | None]:
        """Multiply-adds of one call on a batch of shape (N, C, H, W) ((N, H, W) for one
        channel) by each algorithm: {"im2col": …, "fourier": …}, the forward pass and with
        ``training`` the backward too (dL/dW and dL/dx); "fourier" is None where it does not
        apply (a stride or dilation other than 1). What ``algorithm="auto"`` compares."""
        if len(batch_shape) == 3:
            batch_shape = (batch_shape[0], 1, *batch_shape[1:])
        n, c, h, w = batch_shape
        h_out, w_out = self._spatial_out(h, w)
        taps = math.prod(self.kernel_size)
        counts = {"im2col": n * h_out * w_out * taps * c * self.filters * (3 if training else 1),
                  "fourier": None}
        if self.strides == (1, 1) and self.dilation == (1, 1):
            (top, bottom), (left, right) = self._pads(h, w)
            padded = (h + top + bottom, w + left + right)
            counts["fourier"] = fourier.multiply_adds(n, c, self.filters, padded,
                                                      self.kernel_size, training)
        return counts

    def algorithm_for(self, batch_shape, training: bool = True) -> str:
        """"im2col" or "fourier": the algorithm a call on a batch of ``batch_shape`` runs
        (``algorithm``, or for "auto" the one ``multiply_adds`` favours)."""
        if self.algorithm != "auto":
            return self.algorithm
        counts = self.multiply_adds(batch_shape, training)
        spectral, im2col = counts["fourier"], counts["im2col"]
        return "fourier" if spectral is not None and spectral < FOURIER_SHARE * im2col else "im2col"

    def _bytes_per_sample(self, algorithm, c, h, w, itemsize) -> int:
        """Bytes of one sample's work arrays: X_col's rows, or the Fourier path's spectra."""
        h_out, w_out = self._spatial_out(h, w)
        if algorithm == "im2col":
            return h_out * w_out * math.prod(self.kernel_size) * c * itemsize
        (top, bottom), (left, right) = self._pads(h, w)
        hp, wp = h + top + bottom, w + left + right
        spectrum = 2 * hp * (wp // 2 + 1)
        return ((spectrum + hp * wp) * c + (spectrum + h_out * w_out) * self.filters) * itemsize

    def _product(self, x_nchw, algorithm, training=False):
        """(Z, what backward needs, padded shape) of a (N, C, H, W) batch.

        Z (N·H′·W′, F): row (n,i,j) holds the F channels of output pixel (n,i,j), so Z is y in
        channels-last memory and y is its (N, F, H′, W′) view, handed on without a reorder
        (see layers.layout). im2col: one GEMM, Z = X_col W_mat, keeping X_col. Fourier: the
        products of ``layers.fourier``, keeping the transformed batch and kernels (with
        ``training``).
        """
        xp = self._padded(x_nchw)
        if algorithm == "fourier":
            y, kept = fourier.forward(xp, self.W.value, training)
            z = y.reshape(-1, self.filters)
        else:
            kept = self._im2col(xp)
            z = kept @ self._kernel_matrix()
        if self.use_bias:
            z += self.b.value
        return z, kept, xp.shape

    def _padded(self, x):
        """The batch (N, C, H, W) read channels-last and zero-padded, x̃ (N, H_p, W_p, C).

        A view, which costs nothing when x is in channels-last memory already (the output of a
        Conv2D, and of the BatchNorm, pooling and activations after it inside a model); with
        padding, the zero-padded channels-last copy is made in one pass.
        """
        n, c, h, w = x.shape
        (top, bottom), (left, right) = self._pads(h, w)
        x_nhwc = x.transpose(0, 2, 3, 1)
        if not (top or bottom or left or right):
            return x_nhwc
        xp = np.zeros((n, h + top + bottom, w + left + right, c), dtype=x.dtype)
        xp[:, top:top + h, left:left + w] = x_nhwc
        return xp

    def _im2col(self, xp):
        """X_col (N·H′·W′, kh·kw·C) of a padded channels-last batch x̃ (N, H_p, W_p, C).

        sliding_window_view over x̃ is a strided view (no copy), and the reshape of its
        transpose is the one copy that builds X_col. Channels-last puts the C values of a pixel,
        and the kw taps of a kernel row, next to each other in memory, so that copy (and the
        sums in col2im) move runs of kw·C values rather than runs of W′.
        """
        n, c = xp.shape[0], xp.shape[3]
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.strides, self.dilation
        windows = sliding_window_view(xp, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(1, 2))
        # (N, H′, W′, C, kh, kw): output positions every s pixels, kernel taps every d pixels.
        windows = windows[:, ::sh, ::sw, :, ::dh, ::dw]
        h_out, w_out = windows.shape[1:3]
        if c == 1 and sw == 1:
            # One channel: copying X_colᵀ (kh·kw, N·H′·W′) instead moves runs of W′ pixels
            # of an image row rather than runs of kw; X_col is its transpose, a view that the
            # products read in place.
            cols_T = windows.transpose(4, 5, 3, 0, 1, 2).reshape(kh * kw, n * h_out * w_out)
            return cols_T.T
        return windows.transpose(0, 1, 2, 4, 5, 3).reshape(n * h_out * w_out, kh * kw * c)

    def _backward(self, grad_y, need_input_grad):
        algorithm, kept, x_shape, padded_shape = self.cache
        n, f, h_out, w_out = grad_y.shape
        c, (kh, kw) = padded_shape[3], self.kernel_size
        # G (N·H′·W′, F), the rows of Z: a view of grad_y in channels-last memory (as the
        # layers after a Conv2D hand it back inside a model), else its one copy.
        G = layout.pixel_rows(grad_y)
        if self.use_bias:
            self.b.grad = G.sum(axis=0)
        if algorithm == "fourier":
            self.W.grad, grad_xp = fourier.backward(grad_y, kept, padded_shape, (kh, kw),
                                                    need_input_grad)
        else:
            grad_W = (kept.T @ G).reshape(kh, kw, c, f).transpose(3, 2, 0, 1)
            self.W.grad = np.ascontiguousarray(grad_W)
            grad_xp = self._col2im(G, padded_shape, (n, h_out, w_out)) if need_input_grad else None
        if not need_input_grad:
            return None
        (top, bottom), (left, right) = self._pads(*x_shape[-2:])
        _, hp, wp, _ = padded_shape
        grad_x = self.laid_out(grad_xp[:, top:hp - bottom, left:wp - right].transpose(0, 3, 1, 2))
        return grad_x[:, 0] if len(x_shape) == 3 else grad_x

    def _col2im(self, G, padded_shape, out_shape):
        """dL/dx̃ (N, H_p, W_p, C) channels-last from G: dL/dX_col = G W_matᵀ put back at the
        pixels X_col read (the adjoint of ``_im2col``).

        Column block (u, v) of dL/dX_col, kernel tap (u, v) of every window, is
        G W[:, :, u, v] (N·H′·W′, C), and it belongs at the pixels x̃[:, d·u + s·i, d·v + s·j, :]
        (channels-last), a strided slice. The loop runs over the kh·kw taps only (at most 25
        for a 5×5 kernel), one product and one slice ``+=`` each, for every sample, pixel and
        channel at once: the block is added while it is in cache, and the
        (N·H′·W′, kh·kw·C) matrix dL/dX_col is never formed. Within one tap the windows read
        distinct pixels, so ``+=`` adds each gradient once; overlapping windows meet across taps.
        """
        n, h_out, w_out = out_shape
        _, hp, wp, c = padded_shape
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.strides, self.dilation
        W_taps = np.ascontiguousarray(self.W.value.transpose(2, 3, 0, 1))  # (kh, kw, F, C)
        block = np.empty((G.shape[0], c), dtype=G.dtype)
        grad_xp = np.zeros(padded_shape, dtype=G.dtype)
        for u in range(kh):
            rows = slice(dh * u, dh * u + sh * (h_out - 1) + 1, sh)
            for v in range(kw):
                columns = slice(dw * v, dw * v + sw * (w_out - 1) + 1, sw)
                np.matmul(G, W_taps[u, v], out=block)
                grad_xp[:, rows, columns] += block.reshape(n, h_out, w_out, c)
        return grad_xp

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
        if self.algorithm != "auto":  # the default stays out: older configurations are unchanged
            config["algorithm"] = self.algorithm
        return config
