"""BatchNorm: normalise each channel by batch statistics, then scale and shift."""

from __future__ import annotations

import math

import numpy as np

from .. import kernels
from ..parameter import Parameter
from ..validate import boolean, number
from . import layout
from .arguments import received_shape
from .base import Layer


class BatchNorm(Layer):
    """Batch normalisation per channel (axis 1) of (N, C) or (N, C, H, W) input.

    The statistics of channel c run over its M values: M = N for (N, C), M = N·H·W for images.
    Shapes: x, y (N, C) or (N, C, H, W); γ, β, μ, σ², running_mean, running_var (C,).

    Forward (training), per channel:
        μ = (1/M) Σ x,   σ² = (1/M) Σ (x − μ)²  (biased),   σ = √(σ² + ε)
        x̂ = (x − μ) / σ,   y = γ x̂ + β
        running_mean ← (1 − m)·running_mean + m·μ
        running_var  ← (1 − m)·running_var  + m·σ²·M/(M − 1)   (unbiased)
    Forward (inference): y = γ (x − running_mean) / √(running_var + ε) + β; nothing changes.

    Backward, with g = dL/dy and sums over the M values of a channel:
        dL/dβ = Σ g,   dL/dγ = Σ g x̂
        dL/dx = (γ / (M σ)) (M g − Σ g − x̂ Σ (g x̂))

    Derivation of dL/dx: x̂ᵢ depends on xⱼ directly and through μ and σ, with
        ∂μ/∂xⱼ = 1/M,
        ∂σ²/∂xⱼ = (2/M) Σᵢ (xᵢ − μ)(δᵢⱼ − 1/M) = 2 (xⱼ − μ)/M   (since Σᵢ (xᵢ − μ) = 0),
        ∂σ/∂xⱼ = (1/(2σ)) ∂σ²/∂xⱼ = x̂ⱼ/M,
    so, by the quotient rule,
        ∂x̂ᵢ/∂xⱼ = (δᵢⱼ − 1/M)/σ − (xᵢ − μ)/σ² · x̂ⱼ/M = (δᵢⱼ − 1/M − x̂ᵢ x̂ⱼ/M) / σ
    and dL/dxⱼ = Σᵢ γ gᵢ ∂x̂ᵢ/∂xⱼ = (γ/σ)(gⱼ − (1/M) Σᵢ gᵢ − x̂ⱼ (1/M) Σᵢ gᵢ x̂ᵢ), which is the
    compact form above: one pass for the two sums, one for dL/dx, no M×M Jacobian.

    The running statistics follow PyTorch (momentum m = 0.1 weighs the new batch; Keras's
    momentum=0.99 weighs the old average and corresponds to m = 0.01 here). They are buffers,
    not parameters: no gradient, no optimizer step; ``save``/``load_model`` keep them (see
    ``Layer.buffers``). Channels are on axis 1 (NCHW, as PyTorch): a rank-3 (N, T, D) input is
    refused rather than guessed at.

    One sample per batch is enough for images with H·W > 1, but not for (N, C) input (nor
    H·W = 1), whose channels then hold one value each: :meth:`min_training_batch` says which,
    and ``Sequential.fit`` reads it before the first step.

    Frozen (``frozen=True``): the inference map in both modes, with running statistics that
    never change, as for fine-tuning, or to explain the prediction of a trained model (a
    saliency map is the gradient of the function the model computes at inference):
        y = a·x + c,   a = γ / √(running_var + ε),   c = β − a·running_mean
        dL/dx = a·g,   dL/dγ = Σ g x̂,   dL/dβ = Σ g,   x̂ = (x − running_mean) / √(running_var + ε)
    A single sample then trains too: nothing is estimated from the batch.

    Computed on pixel rows (N, H·W·C), each pixel's C channels side by side: x itself for
    (N, C) input, a view for images in channels-last memory (as Conv2D hands them on inside
    a model, see ``layers.layout``); y keeps that layout. Cache (training only): x − μ (the
    running mean when frozen) and 1/σ; x̂ = (x − μ)/σ enters backward through per-channel
    factors, so the forward makes y from x − μ in one product and one sum. With numba
    (``chainrule.kernels``) training runs each way in two compiled passes over the pixel rows
    (M, C) instead, and the cache holds (x, μ) and 1/σ (x itself, not a copy: an x written
    to between forward and backward changes the gradient). ``x_hat`` gives x̂ from either
    cache.

    Args:
        momentum: m in [0, 1], the weight of the current batch in the running statistics.
        eps: ε > 0, added to the variance for stability.
        frozen: normalise with the running statistics in training too, and never update them.

    Raises:
        ValueError: at construction for a momentum outside [0, 1] or a non-positive eps; at
            forward for an input that is not (N, C) or (N, C, H, W), a channel count other
            than the one the layer was built for, or (training only) a single value per channel.
    """

    def __init__(self, momentum: float = 0.1, eps: float = 1e-5, frozen: bool = False,
                 name=None, input_shape=None):
        super().__init__(name=name, input_shape=input_shape)
        self.frozen = boolean(frozen, "frozen", "BatchNorm")
        self.momentum = number(
            momentum, "momentum", "BatchNorm", "[0, 1]",
            " (PyTorch's convention: the weight of the new batch, 0.1 by default)")
        self.eps = number(eps, "eps", "BatchNorm", "positive")
        self.gamma: Parameter | None = None
        self.beta: Parameter | None = None
        self.running_mean: np.ndarray | None = None
        self.running_var: np.ndarray | None = None

    def _build(self, input_shape, rng):
        channels = input_shape[0]
        self.gamma = Parameter(np.ones(channels, dtype=self.dtype), "gamma")
        self.beta = Parameter(np.zeros(channels, dtype=self.dtype), "beta")
        self._params = [self.gamma, self.beta]
        self.running_mean = np.zeros(channels, dtype=self.dtype)
        self.running_var = np.ones(channels, dtype=self.dtype)

    def param_shapes(self, input_shape):
        return {"gamma": (input_shape[0],), "beta": (input_shape[0],)}

    def buffer_shapes(self, input_shape):
        return {"running_mean": (input_shape[0],), "running_var": (input_shape[0],)}

    def min_training_batch(self) -> int:
        """The fewest samples a training batch needs: 2 when one sample gives a channel a single
        value ((N, C) input, or (N, C, 1, 1)), 1 for images with H·W > 1; 2 before build, when
        the input is not known yet. Inference takes any batch.

        ``Sequential.fit`` asks every layer (see ``Layer.min_training_batch``): it refuses a
        smaller ``batch_size`` and leaves out a smaller last batch.
        """
        if self.frozen:
            return 1
        if self.input_shape is None or math.prod(self.input_shape[1:]) == 1:
            return 2
        return 1

    def buffers(self):
        if not self.built:
            return {}
        return {"running_mean": self.running_mean, "running_var": self.running_var}

    def check_sample_shape(self, shape, batch=None):
        received = received_shape(shape, batch)
        if len(shape) not in (1, 3):
            hint = ""
            if len(shape) == 2:
                hint = ("; channels are on axis 1: reshape (N, C, L) to (N, C, L, 1), or "
                        "flatten to (N, features) first")
            raise ValueError(
                f"{self.label} expected input of shape (N, C) or (N, C, H, W), got input of "
                f"shape {received}{hint}"
            )
        if self.built:
            self.check_size(shape, 0, self.gamma.value.shape[0], "channels on axis 1", received)

    def _forward(self, x, training):
        # The math runs on x as pixel rows (N, P·C) (see ``_pixel_rows``); a per-channel (C,)
        # vector v enters as tile(v, P), v[c] at every pixel, so that every pass is long.
        rows, c = _pixel_rows(x), x.shape[1]
        p = rows.shape[1] // c
        if not training or self.frozen:
            inv_std = 1.0 / np.sqrt(self.running_var + self.eps)
            if not training:  # the same operations in one compiled pass, when numba is there
                y = kernels.channel_affine(rows.reshape(-1, c), self.running_mean,
                                           self.gamma.value * inv_std, self.beta.value)
                if y is not None:
                    return _images(y.reshape(rows.shape), x.shape)
            centred = rows - np.tile(self.running_mean, p)
            if training:
                self.cache = (_images(centred, x.shape), inv_std)
                y = centred * np.tile(self.gamma.value * inv_std, p)
            else:
                y = centred
                y *= np.tile(self.gamma.value * inv_std, p)
            y += np.tile(self.beta.value, p)
            return _images(y, x.shape)
        m = x.size // c
        if m == 1:
            raise ValueError(
                f"{self.label} needs more than one value per channel when training, got input "
                f"of shape {x.shape} (the batch variance of one value is 0); use a batch of 2 or "
                "more"
            )
        flat = rows.reshape(-1, c)
        moments = kernels.channel_moments(flat)
        if moments is not None:
            mean, var = moments
        else:
            mean = _channel_sums(rows, c) / float(m)
            centred = rows - np.tile(mean, p)
            var = _channel_dots(centred, centred, c) / float(m)
        inv_std = 1.0 / np.sqrt(var + self.eps)
        self.running_mean *= 1.0 - self.momentum
        self.running_mean += self.momentum * mean
        self.running_var *= 1.0 - self.momentum
        self.running_var += (self.momentum * m / (m - 1)) * var
        # y = γ x̂ + β with x̂ = (x − μ)/σ: one product of the centred x by γ/σ, one sum.
        scale = self.gamma.value * inv_std
        if moments is not None:
            y = kernels.channel_affine(flat, mean, scale, self.beta.value)
            self.cache = ((x, mean), inv_std)
            return _images(y.reshape(rows.shape), x.shape)
        self.cache = (_images(centred, x.shape), inv_std)
        y = centred * np.tile(scale, p)
        y += np.tile(self.beta.value, p)
        return _images(y, x.shape)

    def _backward(self, grad_y, need_input_grad):
        # The cache holds x − μ and 1/σ (running statistics when frozen), or (x, μ) and 1/σ
        # from the compiled forward: x̂ = (x − μ)·(1/σ) enters every formula through a
        # per-channel factor, so x̂ itself is never formed.
        g, c = _pixel_rows(grad_y), grad_y.shape[1]
        p = g.shape[1] // c
        centred, inv_std = self.cache
        if isinstance(centred, tuple):
            grad_x = self._compiled_backward(g, c, need_input_grad)
            if grad_x is not False:
                return None if grad_x is None else self.laid_out(_images(grad_x, grad_y.shape))
            x, mean = centred
            centred = _pixel_rows(x) - np.tile(mean, p)
        else:
            centred = _pixel_rows(centred)
        sum_g = _channel_sums(g, c)
        sum_g_xhat = _channel_dots(g, centred, c) * inv_std
        self.gamma.grad = sum_g_xhat
        self.beta.grad = sum_g
        if not need_input_grad:
            return None
        if self.frozen:
            grad_x = g * np.tile(self.gamma.value * inv_std, p)
            return self.laid_out(_images(grad_x, grad_y.shape))
        m = grad_y.size // c
        # (γ / (M σ)) (M g − Σg − x̂ Σ(g x̂)) = a g − b − c (x − μ) with per-channel a, b, c.
        scale = self.gamma.value * inv_std / float(m)
        grad_x = g * np.tile(scale * float(m), p)
        grad_x -= np.tile(scale * sum_g, p)
        grad_x -= centred * np.tile(scale * sum_g_xhat * inv_std, p)
        return self.laid_out(_images(grad_x, grad_y.shape))

    def x_hat(self, cache=None) -> np.ndarray:
        """x̂ = (x − μ)/σ of the last training forward, shaped as its input: from ``cache``
        (a ``layer.cache`` kept before backward released it) or the layer's own."""
        centred, inv_std = self.cache if cache is None else cache
        if isinstance(centred, tuple):
            x, mean = centred
            centred = x - _per_channel(mean, x.ndim)
        return centred * _per_channel(inv_std, centred.ndim)

    def _compiled_backward(self, g, c, need_input_grad):
        """The backward on the compiled forward's cache (x, μ, 1/σ) in two compiled passes:
        dL/dx as pixel rows shaped like g (None when not needed), or False when the loops do
        not take g (the caller then runs the NumPy formulas)."""
        (x, mean), inv_std = self.cache
        flat = _pixel_rows(x).reshape(-1, c)
        g_flat = np.ascontiguousarray(g).reshape(-1, c)
        sums = kernels.channel_grad_sums(g_flat, flat, mean)
        if sums is None:
            return False
        sum_g, sum_g_centred = sums
        sum_g_xhat = sum_g_centred * inv_std
        self.gamma.grad = sum_g_xhat
        self.beta.grad = sum_g
        if not need_input_grad:
            return None
        m = flat.shape[0]
        # The same per-channel a, b, c as the NumPy formulas below.
        scale = self.gamma.value * inv_std / float(m)
        grad_x = kernels.batchnorm_input_grad(g_flat, flat, mean, scale * float(m),
                                              scale * sum_g, scale * sum_g_xhat * inv_std)
        return False if grad_x is None else grad_x.reshape(g.shape)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "eps": self.eps,
                "frozen": self.frozen}


def _per_channel(v: np.ndarray, ndim: int) -> np.ndarray:
    """A per-channel (C,) vector shaped to broadcast over (N, C) or (N, C, H, W)."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _pixel_rows(x: np.ndarray) -> np.ndarray:
    """x as pixel rows (N, P·C): row n holds sample n's P pixels (P = H·W, 1 for (N, C)
    input), each as its C channel values, so channel c of pixel p is column p·C + c.

    x itself for (N, C) input; a view for images in channels-last memory (as a Conv2D hands
    them on inside a model, see ``layers.layout``), else one copy. A per-channel vector then
    broadcasts as ``np.tile(v, P)`` along whole rows: NumPy runs one long inner loop per row,
    where broadcasting a (C,) vector over a (N·P, C) matrix runs N·P loops of only C values.
    """
    if x.ndim == 2:
        return x
    return layout.pixel_rows(x).reshape(x.shape[0], -1)


def _images(rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Pixel rows (N, P·C) back as an array of ``shape``: (N, C) itself, or the (N, C, H, W)
    view of the rows as channels-last memory."""
    if len(shape) == 2:
        return rows
    return layout.images(rows.reshape(-1, shape[1]), shape)


def _channel_sums(rows: np.ndarray, c: int) -> np.ndarray:
    """Σ over samples and pixels, per channel (C,), of pixel rows (N, P·C)."""
    return np.einsum("np->p", rows).reshape(-1, c).sum(axis=0)


def _channel_dots(a: np.ndarray, b: np.ndarray, c: int) -> np.ndarray:
    """Σ over samples and pixels of a ⊙ b, per channel (C,), with no temporary of a's size."""
    return np.einsum("np,np->p", a, b).reshape(-1, c).sum(axis=0)


class LayerNorm(Layer):
    """Layer normalisation over the last axis (D features) of (N, D) or (N, T, D) input, as
    ``torch.nn.LayerNorm(D)``.

    Every row (one sample, or one position of one sequence) is normalised by its own statistics,
    so training and inference compute the same thing and any batch size works.
    Shapes: x, x̂, y (N, …, D); γ, β (D,); μ, σ one per row.

    Forward, per row of D values:
        μ = (1/D) Σᵢ xᵢ,   σ² = (1/D) Σᵢ (xᵢ − μ)²  (biased, as torch),   σ = √(σ² + ε)
        x̂ = (x − μ) / σ,   y = γ ⊙ x̂ + β

    Backward, with g = dL/dy and ĝ = γ ⊙ g (the gradient with respect to x̂):
        dL/dβ = Σ_rows g,   dL/dγ = Σ_rows g ⊙ x̂
        dL/dx = (1/σ) (ĝ − mean(ĝ) − x̂ ⊙ mean(ĝ ⊙ x̂))        means over the D features of a row

    Derivation of dL/dx (one row; the same steps as BatchNorm's, with the statistics taken
    across the features instead of across the batch). x̂ᵢ depends on every xⱼ of its row, directly
    and through μ and σ:
        ∂μ/∂xⱼ = 1/D
        ∂σ²/∂xⱼ = (2/D) Σᵢ (xᵢ − μ)(δᵢⱼ − 1/D) = 2 (xⱼ − μ)/D      (Σᵢ (xᵢ − μ) = 0)
        ∂σ/∂xⱼ = (1/(2σ)) ∂σ²/∂xⱼ = x̂ⱼ / D
    so by the quotient rule on x̂ᵢ = (xᵢ − μ)/σ,
        ∂x̂ᵢ/∂xⱼ = (δᵢⱼ − 1/D)/σ − (xᵢ − μ)/σ² · x̂ⱼ/D = (δᵢⱼ − 1/D − x̂ᵢ x̂ⱼ / D) / σ
    and dL/dxⱼ = Σᵢ ĝᵢ ∂x̂ᵢ/∂xⱼ = (1/σ)(ĝⱼ − (1/D) Σᵢ ĝᵢ − x̂ⱼ (1/D) Σᵢ ĝᵢ x̂ᵢ): two row sums and
    one element-wise pass, never the D×D Jacobian. Its two terms remove from ĝ its component
    along the all-ones direction and along x̂, the directions the normalisation is blind to
    (shifting a row; scaling it, when ε = 0): Σⱼ dL/dxⱼ = 0 always, and Σⱼ x̂ⱼ dL/dxⱼ =
    (ε/(σ² + ε))·(1/σ) Σⱼ ĝⱼ x̂ⱼ, which vanishes with ε.

    What to cache and what to recompute: backward needs x̂ twice (for dL/dγ and for dL/dx) and
    1/σ once per row; caching x̂ (one array the size of x) and 1/σ (one number per row) means
    backward reads no x, recomputes no statistics and runs no square root. (llm.c caches μ and
    1/σ and recomputes x̂ from x instead: the same memory, since x must then be kept.)

    Args:
        eps: ε > 0, added to the variance (1e-5 as torch).

    Raises:
        ValueError: at construction for a non-positive eps; at forward for a 1-D batch or a last
            axis other than the D the layer was built for.
    """

    def __init__(self, eps: float = 1e-5, name=None, input_shape=None):
        super().__init__(name=name, input_shape=input_shape)
        eps = float(eps)
        if not eps > 0.0:
            raise ValueError(f"LayerNorm: eps must be positive, got {eps}")
        self.eps = eps
        self.gamma: Parameter | None = None
        self.beta: Parameter | None = None

    def _build(self, input_shape, rng):
        features = input_shape[-1]
        self.gamma = Parameter(np.ones(features, dtype=self.dtype), "gamma")
        self.beta = Parameter(np.zeros(features, dtype=self.dtype), "beta")
        self._params = [self.gamma, self.beta]

    def check_sample_shape(self, shape, batch=None):
        received = received_shape(shape, batch)
        if len(shape) == 0:
            raise ValueError(
                f"{self.label} expected input of shape (N, D) or (N, T, D), got a 1-D batch "
                f"of shape {received}; reshape to (N, 1) for one feature"
            )
        if self.built:
            self.check_size(shape, -1, self.gamma.value.shape[0], "features on the last axis",
                            received)

    def _forward(self, x, training):
        d = float(x.shape[-1])
        mean = np.sum(x, axis=-1, keepdims=True) / d
        x_hat = x - mean
        var = np.einsum("...d,...d->...", x_hat, x_hat)[..., None] / d
        inv_std = 1.0 / np.sqrt(var + self.eps)
        x_hat *= inv_std
        if training:
            self.cache = (x_hat, inv_std)
        y = x_hat * self.gamma.value
        y += self.beta.value
        return y

    def _backward(self, grad_y, need_input_grad):
        x_hat, inv_std = self.cache
        features = x_hat.shape[-1]
        g_rows = grad_y.reshape(-1, features)
        x2 = x_hat.reshape(-1, features)
        self.gamma.grad = np.einsum("rd,rd->d", g_rows, x2)
        self.beta.grad = np.sum(g_rows, axis=0)
        if not need_input_grad:
            return None
        d = float(features)
        g_hat = grad_y * self.gamma.value
        mean_g = np.sum(g_hat, axis=-1, keepdims=True) / d
        mean_gx = np.einsum("...d,...d->...", g_hat, x_hat)[..., None] / d
        grad_x = g_hat - mean_g
        grad_x -= x_hat * mean_gx
        grad_x *= inv_std
        return grad_x

    def get_config(self):
        return {**super().get_config(), "eps": self.eps}
