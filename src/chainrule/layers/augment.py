"""Data augmentation layers: random during training, the identity at inference."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..validate import non_negative_int
from .arguments import received_shape
from .base import RandomLayer


class RandomShift(RandomLayer):
    """Shift each training image by a random whole number of pixels, filling with zeros.

    Forward (training): y[n, …, i, j] = x[n, …, i − δᵢ(n), j − δⱼ(n)] (0 outside the image),
        δᵢ(n), δⱼ(n) drawn uniformly from {−s, …, s} for every sample n.
    Forward (inference): y = x.
    Backward: a shift moves pixels without scaling them, so dL/dx is dL/dy shifted back by
        (−δᵢ(n), −δⱼ(n)), with the pixels that fell off the image getting 0 gradient.

    MNIST digits are centred by their centre of mass, which puts them within a pixel or two of
    where a new handwritten digit lands; shifting training images by up to 2 pixels teaches the
    network that position, while the test images are left as they are.

    Works on (N, H, W) and (N, C, H, W) batches (every channel of a sample moves together).
    Cache (training only): the per-sample offsets.

    Args:
        max_shift: s, the largest shift in pixels along each axis.
        seed: seed of this layer's own Generator; by default a Sequential derives one from its
            seed, so training stays reproducible.
    """

    def __init__(self, max_shift: int = 2, seed: int | None = None, name=None, input_shape=None):
        super().__init__(seed=seed, name=name, input_shape=input_shape)
        self.max_shift = non_negative_int(max_shift, "max_shift", "RandomShift")
        self._scratch: np.ndarray | None = None

    def check_sample_shape(self, shape, batch=None):
        if len(shape) not in (2, 3):
            raise ValueError(
                f"{self.label} expected images of shape (N, H, W) or (N, C, H, W), got input "
                f"of shape {received_shape(shape, batch)}"
            )

    def _padded(self, x):
        """x inside a border of s zeros on each side of its last two axes.

        Written into a scratch array kept between batches (grown when a batch is larger):
        only the interior is ever assigned, so the border stays zero.
        """
        s = self.max_shift
        n, h, w = x.shape[0], x.shape[-2], x.shape[-1]
        shape = (n, *x.shape[1:-2], h + 2 * s, w + 2 * s)
        scratch = self._scratch
        if (scratch is None or scratch.dtype != x.dtype or scratch.shape[1:] != shape[1:]
                or scratch.shape[0] < n):
            scratch = self._scratch = np.zeros(shape, x.dtype)
        padded = scratch[:n]
        padded[..., s:s + h, s:s + w] = x
        return padded

    def _shift(self, x, offsets):
        """x shifted by per-sample (δᵢ, δⱼ) rows of ``offsets``: one copy into a zero-bordered
        array, one gather (which makes a new array, so the scratch can be reused)."""
        s = self.max_shift
        padded = self._padded(x)
        h, w = x.shape[-2:]
        # windows[n, …, a, b] is the h×w image window starting at row a, column b of the
        # padded image: window (s − δᵢ, s − δⱼ) is the image shifted by (δᵢ, δⱼ).
        windows = sliding_window_view(padded, (h, w), axis=(-2, -1))
        rows, cols = s - offsets[:, 0], s - offsets[:, 1]
        n = np.arange(x.shape[0])
        if x.ndim == 3:
            return windows[n, rows, cols]
        return windows[n, :, rows, cols]

    def _forward(self, x, training):
        if not training or self.max_shift == 0:
            if training:
                self.cache = None
            return x
        offsets = self.rng.integers(-self.max_shift, self.max_shift + 1, size=(x.shape[0], 2))
        self.cache = offsets
        return self._shift(x, offsets)

    def _backward(self, grad_y, need_input_grad):
        if not need_input_grad:
            return None
        if self.cache is None:
            return grad_y
        return self._shift(grad_y, -self.cache)

    def get_config(self):
        return {**super().get_config(), "max_shift": self.max_shift, "seed": self.seed}
